//! `Microsoft.Compute/virtualMachines` GET: how a node maps itself (IMDS name) to its
//! NIC IDs through `properties.networkProfile.networkInterfaces[].id`.

use crate::arm::{resource_not_found, rg_not_found, Ctx};
use crate::auth::authorize;
use crate::http::Resp;
use crate::ids;
use crate::state::State;
use serde_json::{json, Value};

/// `GET .../providers/Microsoft.Compute/virtualMachines/{vm}`.
pub(crate) fn get_vm(st: &State, ctx: &Ctx, sub: &str, rg: &str, name: &str) -> Resp {
    let id = ids::resource_id(sub, rg, "Microsoft.Compute/virtualMachines", name);
    if let Err(r) = authorize(
        st,
        &ctx.principal,
        "Microsoft.Compute/virtualMachines/read",
        &id,
    ) {
        return r;
    }
    if st.resource_group(sub, rg).is_none() {
        return rg_not_found(rg);
    }
    let Some(vm) = st.vms.get(&ids::key(&id)) else {
        return resource_not_found("Microsoft.Compute/virtualMachines", name, rg);
    };
    let tenant = st
        .subscriptions
        .get(&vm.subscription.to_ascii_lowercase())
        .map(|s| s.tenant_id.clone())
        .unwrap_or_default();
    let nics: Vec<Value> = vm
        .nic_ids
        .iter()
        .enumerate()
        .map(|(i, id)| json!({"id": id, "properties": {"primary": i == 0}}))
        .collect();
    Resp::json(
        200,
        &json!({
            "name": vm.name,
            "id": vm.id,
            "type": "Microsoft.Compute/virtualMachines",
            "location": vm.location,
            "identity": {"type": "SystemAssigned", "principalId": vm.principal_id, "tenantId": tenant},
            "properties": {
                "vmId": vm.vm_id,
                "hardwareProfile": {"vmSize": vm.vm_size},
                "provisioningState": "Succeeded",
                "osProfile": {"computerName": vm.name, "adminUsername": "azureuser"},
                "networkProfile": {"networkInterfaces": nics},
            }
        }),
    )
}
