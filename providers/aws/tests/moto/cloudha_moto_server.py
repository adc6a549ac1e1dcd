"""moto's server with the two things cloudha's selftest needs and moto 5.2.5 lacks.

1. IAM SimulatePrincipalPolicy (moto raises NotImplementedError for it). Implemented here by
   evaluating the identity-based policies moto's own IAM backend stores for the principal
   (managed and inline, on the role or user and the user's groups) with moto's own policy
   engine (moto.iam.access_control.IAMPolicy: Allow/Deny, wildcards). Request and response
   follow https://docs.aws.amazon.com/IAM/latest/APIReference/API_SimulatePrincipalPolicy.html
   (PolicySourceArn, ActionNames.member.N, ResourceArns.member.N; EvaluationResults with
   EvalActionName, EvalResourceName, EvalDecision allowed/explicitDeny/implicitDeny,
   MatchedStatements). Condition keys, permission boundaries and SCPs are not evaluated.
2. DryRun on EC2 CreateRoute and ReplaceRoute: real EC2 supports it (DryRunOperation when
   allowed); moto 5.2.5 ignores the flag and changes the route.
3. DryRun answers from the caller's IAM policies, as EC2 does: moto always answers
   DryRunOperation. Here a DryRun request signed with an access key moto's IAM knows (an IAM
   user's key, or an assumed role's) is evaluated against that principal's policies with moto's
   own engine, for the ARN of every resource the request names (route table, ENI, Elastic IP,
   instance: EC2 authorizes each), and refused with UnauthorizedOperation when one is not
   allowed. Keys moto's IAM does not
   know (the tests' usual "testing") are not enforced, which is moto's default for every call.

Run it like moto_server: python cloudha_moto_server.py -H 127.0.0.1 -p PORT
"""

import sys
from xml.sax.saxutils import escape

from moto.ec2.exceptions import DryRunClientError, EC2ClientError
from moto.ec2.responses._base_response import EC2BaseResponse
from moto.ec2.responses.route_tables import RouteTables
from moto.iam.access_control import IAMPolicy, IAMRequest, PermissionResult
from moto.iam.responses import IamResponse
from moto.server import main

NS = "https://iam.amazonaws.com/doc/2010-05-08/"


def _honour_dry_run(method):
    def wrapper(self):
        self.error_on_dryrun()
        return method(self)

    wrapper.__name__ = method.__name__
    return wrapper


class _UnknownKey(Exception):
    pass


class _Denied(Exception):
    pass


class _DryRunAuthorization(IAMRequest):
    def _raise_invalid_access_key(self, _reason):
        raise _UnknownKey()

    def _raise_access_denied(self):
        raise _Denied()


# Request parameters naming a resource, and the resource type of its ARN, as in the Service
# Authorization Reference for Amazon EC2 (ReplaceRoute/CreateRoute: route-table;
# AssociateAddress: elastic-ip, network-interface, instance; ModifyNetworkInterfaceAttribute:
# network-interface). EC2 authorizes a request against every resource it acts on.
_RESOURCE_PARAMS = [
    ("RouteTableId", "route-table"),
    ("NetworkInterfaceId", "network-interface"),
    ("AllocationId", "elastic-ip"),
    ("InstanceId", "instance"),
]


def _resource_arns(self):
    arns = []
    for param, kind in _RESOURCE_PARAMS:
        value = self._get_param(param)
        if value:
            arns.append(f"arn:aws:ec2:{self.region}:{self.current_account}:{kind}/{value}")
    return arns or ["*"]


def _error_on_dryrun(self):
    if not self._get_param("DryRun", False):
        return
    try:
        for arn in _resource_arns(self):
            _DryRunAuthorization(
                account_id=self.current_account,
                method=self.method,
                path=self.raw_path,
                data=self.data,
                body=self.raw_body,
                headers=self.headers,
                action=self._get_action(),
            ).check_action_permitted(arn)
    except _UnknownKey:
        pass
    except _Denied:
        raise EC2ClientError(
            "UnauthorizedOperation",
            "You are not authorized to perform this operation.",
        )
    raise DryRunClientError()


EC2BaseResponse.error_on_dryrun = _error_on_dryrun
RouteTables.create_route = _honour_dry_run(RouteTables.create_route)
RouteTables.replace_route = _honour_dry_run(RouteTables.replace_route)


def _policies_of(backend, arn):
    """(name, IAMPolicy) for every identity-based policy of the role or user named by arn."""
    resource = arn.split(":", 5)[5] if arn.count(":") >= 5 else ""
    kind, _, path_and_name = resource.partition("/")
    name = path_and_name.rsplit("/", 1)[-1]
    out = []
    if kind == "role":
        role = backend.get_role(name)
        holders = [role]
    elif kind == "user":
        user = backend.get_user(name)
        holders = [user] + [g for g in backend.groups.values() if user in g.users]
    else:
        raise KeyError(arn)
    for holder in holders:
        for policy in holder.managed_policies.values():
            out.append((policy.name, IAMPolicy(policy)))
        for policy_name, document in holder.policies.items():
            out.append((policy_name, IAMPolicy(document)))
    return out


def _error(code, message, status):
    body = (
        f'<ErrorResponse xmlns="{NS}"><Error><Type>Sender</Type><Code>{code}</Code>'
        f"<Message>{escape(message)}</Message></Error>"
        "<RequestId>cloudha-moto</RequestId></ErrorResponse>"
    )
    return body, {"status": status}


def simulate_principal_policy(self):
    source = self._get_param("PolicySourceArn")
    actions = self._get_param("ActionNames", [])
    resources = self._get_param("ResourceArns", []) or ["*"]
    if not source or not actions:
        return _error(
            "InvalidInput", "PolicySourceArn and ActionNames are required.", 400
        )
    try:
        policies = _policies_of(self.backend, source)
    except Exception:  # moto raises its own NoSuchEntity types; the API answers 404
        return _error(
            "NoSuchEntity", f"The principal {source} cannot be found.", 404
        )
    members = []
    for action in actions:
        for resource in resources:
            decision = "implicitDeny"
            matched = []
            for name, policy in policies:
                result = policy.is_action_permitted(action, resource)
                if result == PermissionResult.DENIED:
                    decision = "explicitDeny"
                    matched = [name]
                    break
                if result == PermissionResult.PERMITTED:
                    decision = "allowed"
                    matched.append(name)
            statements = "".join(
                f"<member><SourcePolicyId>{escape(m)}</SourcePolicyId>"
                "<SourcePolicyType>IAM Policy</SourcePolicyType></member>"
                for m in matched
            )
            members.append(
                "<member>"
                f"<EvalActionName>{escape(action)}</EvalActionName>"
                f"<EvalResourceName>{escape(resource)}</EvalResourceName>"
                f"<EvalDecision>{decision}</EvalDecision>"
                f"<MatchedStatements>{statements}</MatchedStatements>"
                "<MissingContextValues/>"
                "</member>"
            )
    return (
        f'<SimulatePrincipalPolicyResponse xmlns="{NS}"><SimulatePrincipalPolicyResult>'
        f"<IsTruncated>false</IsTruncated><EvaluationResults>{''.join(members)}"
        "</EvaluationResults></SimulatePrincipalPolicyResult>"
        "<ResponseMetadata><RequestId>cloudha-moto</RequestId></ResponseMetadata>"
        "</SimulatePrincipalPolicyResponse>"
    )


IamResponse.simulate_principal_policy = simulate_principal_policy

if __name__ == "__main__":
    main(sys.argv[1:])
