//! Pieces shared by the ARM handlers: the per-request context and common ARM answers.

use crate::http::{arm_error, Req, Resp};
use crate::lro::LroCtx;
use tokio::time::Instant;

/// What every ARM handler needs about the call.
pub(crate) struct Ctx<'a> {
    /// Caller's principal (object) ID.
    pub principal: String,
    /// "Now" for this request.
    pub now: Instant,
    /// Where to point LRO headers.
    pub lro: LroCtx,
    /// The request.
    pub req: &'a Req,
}

/// 404 `ResourceGroupNotFound` (ARM).
pub(crate) fn rg_not_found(rg: &str) -> Resp {
    arm_error(
        404,
        "ResourceGroupNotFound",
        format!("Resource group '{rg}' could not be found."),
    )
}

/// 404 `ResourceNotFound` (ARM) for a top-level resource.
pub(crate) fn resource_not_found(provider_type: &str, name: &str, rg: &str) -> Resp {
    arm_error(
        404,
        "ResourceNotFound",
        format!(
            "The Resource '{provider_type}/{name}' under resource group '{rg}' was not found. For more details please go to https://aka.ms/ARMResourceNotFoundFix"
        ),
    )
}

/// 404 `NotFound` (NRP) for a child resource such as a route or subnet.
pub(crate) fn child_not_found(id: &str) -> Resp {
    crate::http::nrp_error(404, "NotFound", format!("Resource {id} not found."))
}

/// Splits an `If-Match`/`If-None-Match` list.
fn etag_list(h: &str) -> impl Iterator<Item = &str> {
    h.split(',').map(str::trim).filter(|s| !s.is_empty())
}

/// Evaluates `If-Match` / `If-None-Match` against the resource's current ETag (`None` if
/// it does not exist). ETags are compared exactly, `W/` prefix included, as NRP does.
pub(crate) fn check_preconditions(req: &Req, id: &str, current: Option<&str>) -> Option<Resp> {
    if let Some(m) = req.header("if-match") {
        let ok = match current {
            None => false,
            Some(cur) => etag_list(m).any(|e| e == "*" || e == cur),
        };
        if !ok {
            return Some(crate::http::nrp_error(
                412,
                "PreconditionFailed",
                format!(
                    "Precondition failed: the ETag {m} provided in the If-Match header does not match the current ETag {} of resource {id}.",
                    current.unwrap_or("(resource does not exist)")
                ),
            ));
        }
    }
    if let Some(m) = req.header("if-none-match") {
        if let Some(cur) = current {
            if etag_list(m).any(|e| e == "*" || e == cur) {
                return Some(crate::http::nrp_error(
                    412,
                    "PreconditionFailed",
                    format!("Precondition failed: resource {id} already exists and If-None-Match is {m}."),
                ));
            }
        }
    }
    None
}
