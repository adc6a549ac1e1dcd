//! The IAM actions a failover needs: the one list that the code, the policy in `deploy/aws/`,
//! the CloudFormation template, the setup script and `cloudha selftest` all share (tests check
//! the policy and template against it).

/// How `selftest` can prove an action without changing anything.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Proof {
    /// Describe calls: proved by making them.
    Call,
    /// The call takes `DryRun=true`: `DryRunOperation` means allowed.
    DryRun,
    /// No `DryRun` on this call: proved with `iam:SimulatePrincipalPolicy` for the role.
    Simulation,
}

/// One action, how `selftest` proves it, and why the failover needs it.
#[derive(Debug, Clone, Copy)]
pub struct RequiredAction {
    pub action: &'static str,
    pub proof: Proof,
    pub why: &'static str,
    /// Needed only when the config has Elastic IPs (AssociateAddress) or routes.
    pub conditional: bool,
}

const fn action(
    action: &'static str,
    proof: Proof,
    why: &'static str,
    conditional: bool,
) -> RequiredAction {
    RequiredAction {
        action,
        proof,
        why,
        conditional,
    }
}

/// Every EC2 action the AWS provider uses.
pub const FAILOVER_ACTIONS: &[RequiredAction] = &[
    action(
        "ec2:DescribeNetworkInterfaces",
        Proof::Call,
        "read both ENIs",
        false,
    ),
    action(
        "ec2:DescribeAddresses",
        Proof::Call,
        "read Elastic IP associations",
        true,
    ),
    action(
        "ec2:DescribeRouteTables",
        Proof::Call,
        "read route targets",
        true,
    ),
    action(
        "ec2:AssignPrivateIpAddresses",
        Proof::Simulation,
        "move the floating private IPs onto this node's ENI",
        false,
    ),
    action(
        "ec2:UnassignPrivateIpAddresses",
        Proof::Simulation,
        "remove a floating IP still shown on the peer's ENI",
        false,
    ),
    action(
        "ec2:AssociateAddress",
        Proof::DryRun,
        "re-associate Elastic IPs with this node",
        true,
    ),
    action(
        "ec2:ReplaceRoute",
        Proof::DryRun,
        "point routes at this node's ENI",
        true,
    ),
    action(
        "ec2:CreateRoute",
        Proof::DryRun,
        "create a configured route that is missing",
        true,
    ),
];

/// The IAM action the setup grants the role on itself so that `selftest` can simulate the
/// actions that have no `DryRun`.
pub const SELFTEST_SIMULATE_ACTION: &str = "iam:SimulatePrincipalPolicy";

/// The action names alone, in the order of [`FAILOVER_ACTIONS`].
pub fn action_names() -> Vec<&'static str> {
    FAILOVER_ACTIONS.iter().map(|a| a.action).collect()
}
