//! The Azure RBAC actions a failover needs: the one list that the code, the custom role
//! definition in `deploy/azure/`, the Bicep template, the setup script and `cloudha selftest`
//! all share (tests check the role and template against it).

/// Which resource an action must be granted on (its narrowest scope).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scope {
    /// Both LAN NICs (this node's and the peer's).
    Nics,
    /// The subnet of the LAN NICs (the VNet may live in another resource group).
    Subnet,
    /// Each public IP a moved ipConfiguration references.
    PublicIps,
    /// The network security group the NICs reference, if any.
    NetworkSecurityGroup,
    /// Each configured route table.
    RouteTables,
    /// Each resource a floating ipConfiguration links to beyond subnet and public IP
    /// (application security groups, load balancer pools and NAT rules, application gateway
    /// pools, a gateway load balancer): the action applies where the entry references one.
    LinkedResources,
    /// The virtual network of the LAN subnet (the atomic move's POST is authorized there).
    VirtualNetwork,
    /// This node's own VM (discovery of its NIC).
    OwnVm,
    /// The subscription: long-running operation status is read at `locations/.../operations`.
    Subscription,
}

/// One action the failover needs, where, and why (shown by `selftest` when it is missing).
#[derive(Debug, Clone, Copy)]
pub struct RequiredAction {
    pub action: &'static str,
    pub scope: Scope,
    pub why: &'static str,
    /// Needed only when the config or the NICs reference such a resource.
    pub conditional: bool,
}

const fn required(action: &'static str, scope: Scope, why: &'static str) -> RequiredAction {
    RequiredAction {
        action,
        scope,
        why,
        conditional: false,
    }
}

const fn when_referenced(action: &'static str, scope: Scope, why: &'static str) -> RequiredAction {
    RequiredAction {
        action,
        scope,
        why,
        conditional: true,
    }
}

/// Every action the Azure provider uses.
pub const FAILOVER_ACTIONS: &[RequiredAction] = &[
    required(
        "Microsoft.Network/networkInterfaces/read",
        Scope::Nics,
        "read both NICs before and after a move",
    ),
    required(
        "Microsoft.Network/networkInterfaces/write",
        Scope::Nics,
        "remove the floating ipConfiguration from the peer's NIC and add it to this node's",
    ),
    required(
        "Microsoft.Network/virtualNetworks/subnets/join/action",
        Scope::Subnet,
        "place an ipConfiguration in the LAN subnet",
    ),
    when_referenced(
        "Microsoft.Network/publicIPAddresses/join/action",
        Scope::PublicIps,
        "move a public IP with its ipConfiguration",
    ),
    when_referenced(
        "Microsoft.Network/networkSecurityGroups/join/action",
        Scope::NetworkSecurityGroup,
        "write a NIC that references a network security group",
    ),
    when_referenced(
        "Microsoft.Network/applicationSecurityGroups/joinIpConfiguration/action",
        Scope::LinkedResources,
        "carry the floating ipConfiguration's application security groups to this node's NIC",
    ),
    when_referenced(
        "Microsoft.Network/loadBalancers/backendAddressPools/join/action",
        Scope::LinkedResources,
        "carry the floating ipConfiguration's load balancer backend pools to this node's NIC",
    ),
    when_referenced(
        "Microsoft.Network/loadBalancers/inboundNatRules/join/action",
        Scope::LinkedResources,
        "carry the floating ipConfiguration's inbound NAT rules to this node's NIC",
    ),
    when_referenced(
        "Microsoft.Network/loadBalancers/frontendIPConfigurations/join/action",
        Scope::LinkedResources,
        "carry the floating ipConfiguration's gateway load balancer to this node's NIC",
    ),
    when_referenced(
        "Microsoft.Network/applicationGateways/backendAddressPools/join/action",
        Scope::LinkedResources,
        "carry the floating ipConfiguration's application gateway backend pools to this node's NIC",
    ),
    when_referenced(
        "Microsoft.Network/virtualNetworks/moveIpConfigurations/action",
        Scope::VirtualNetwork,
        "move the floating ipConfiguration in one call (move_mode = \"atomic\" only)",
    ),
    when_referenced(
        "Microsoft.Network/routeTables/read",
        Scope::RouteTables,
        "read each configured route table",
    ),
    when_referenced(
        "Microsoft.Network/routeTables/routes/read",
        Scope::RouteTables,
        "read each configured route",
    ),
    when_referenced(
        "Microsoft.Network/routeTables/routes/write",
        Scope::RouteTables,
        "point each configured route's next hop at the active node",
    ),
    required(
        "Microsoft.Network/locations/operations/read",
        Scope::Subscription,
        "follow the long-running NIC and route updates to their end",
    ),
    required(
        "Microsoft.Compute/virtualMachines/read",
        Scope::OwnVm,
        "find this node's LAN NIC among its VM's NICs",
    ),
];

/// The action names alone, in the order of [`FAILOVER_ACTIONS`].
pub fn action_names() -> Vec<&'static str> {
    FAILOVER_ACTIONS.iter().map(|a| a.action).collect()
}
