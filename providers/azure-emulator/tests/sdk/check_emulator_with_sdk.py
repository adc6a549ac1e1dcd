#!/usr/bin/env python3
"""Drives the cloudha Azure emulator with the official Azure SDK for Python.

azure-mgmt-network (generated from Azure/azure-rest-api-specs) on azure-mgmt-core /
azure-core is a client the project did not write: its LRO poller (ARMPolling) follows the
emulator's Azure-AsyncOperation / Location / Retry-After headers, its error handling parses
the emulator's CloudError bodies, its models parse the emulator's documents. A step that
works here works the same way against Azure; a step that fails points at the emulator.

Run by providers/azure-emulator/tests/all/sdk.rs, which starts the emulator on loopback and
checks the emulator's state after this script has run. Usage:

    check_emulator_with_sdk.py BASE_URL TOKEN SUBSCRIPTION RESOURCE_GROUP

Prints one JSON object per step ({"step": ..., ...}) and exits non-zero on the first
failure, naming the step.

TLS: the emulator serves plain http on loopback. azure-core's bearer policy (which the ARM
policy, ARMChallengeAuthenticationPolicy, extends) refuses to put a token on a non-https
request unless the call says `enforce_https=False`; that per-call opt-out is azure-core's own
documented switch (BearerTokenCredentialPolicy, `_enforce_https`), so every call below passes
it, and it reaches the LRO poller's requests through the poller's operation config. Nothing
else about the calls differs from calls to management.azure.com.
"""

import json
import sys
import time

from azure.core.credentials import AccessToken
from azure.core.exceptions import HttpResponseError
from azure.mgmt.network import NetworkManagementClient

ENFORCE = {"enforce_https": False}
NIC_A = "nic-appliance-a"
NIC_B = "nic-appliance-b"
VNET = "vnet-ha"
ROUTE_TABLE = "rt-workloads"
ROUTE = "default-via-appliance"
FLOATING = "floating"


class StaticToken:
    """A TokenCredential holding one bearer token the emulator issued (as the emulated IMDS
    would hand it to the VM). azure-core only needs get_token."""

    def __init__(self, token):
        self._token = token

    def get_token(self, *scopes, **kwargs):
        # The emulator's tokens live ~24 h; one hour is what azure-core plans a refresh by.
        return AccessToken(self._token, int(time.time()) + 3600)


def report(step, **fields):
    print(json.dumps({"step": step, **fields}), flush=True)


def fail(step, message):
    report(step, ok=False, error=message)
    sys.exit(1)


def ipconfig(nic, name):
    for c in nic.ip_configurations or []:
        if c.name == name:
            return c
    return None


def main():
    if len(sys.argv) != 5:
        sys.exit("usage: check_emulator_with_sdk.py BASE_URL TOKEN SUBSCRIPTION RESOURCE_GROUP")
    base_url, token, sub, rg = sys.argv[1:]
    client = NetworkManagementClient(
        StaticToken(token),
        sub,
        base_url=base_url,
        # The SDK's own default when a response has no Retry-After is 30 s; the emulator
        # always sends one, so this only bounds a mistake.
        polling_interval=1,
    )

    # 1. GET: the model parses the emulator's NIC document.
    step = "nic.get"
    nic_a = client.network_interfaces.get(rg, NIC_A, **ENFORCE)
    floating = ipconfig(nic_a, FLOATING)
    if floating is None or not floating.private_ip_address:
        fail(step, f"{NIC_A} has no {FLOATING} ipConfiguration with an address")
    if not (nic_a.etag or "").startswith('W/"'):
        fail(step, f"etag {nic_a.etag!r} is not a weak ETag")
    report(step, ok=True, etag=nic_a.etag, floating=floating.private_ip_address)

    # 2. NIC PUT as an LRO, polled to the end by ARMPolling (Azure-AsyncOperation, then the
    #    final GET of the resource the spec's final-state-via asks for).
    step = "nic.begin_create_or_update"
    nic_b = client.network_interfaces.get(rg, NIC_B, **ENFORCE)
    nic_b.tags = dict(nic_b.tags or {}, sdk="azure-mgmt-network")
    poller = client.network_interfaces.begin_create_or_update(rg, NIC_B, nic_b, **ENFORCE)
    done = poller.result()
    if done.provisioning_state != "Succeeded":
        fail(step, f"result provisioningState {done.provisioning_state!r}, want Succeeded")
    if (done.tags or {}).get("sdk") != "azure-mgmt-network":
        fail(step, f"result tags {done.tags!r} lack the new tag")
    if done.etag == nic_b.etag:
        fail(step, "the ETag did not change on an update")
    report(step, ok=True, status=poller.status(), etag=done.etag)

    # 3. 412 on a stale If-Match. The NIC operation has no etag keyword in this SDK, so the
    #    header goes in as the SDK's generic `headers=` kwarg, as a caller would on Azure.
    step = "nic.stale_if_match"
    stale = nic_b.etag
    try:
        client.network_interfaces.begin_create_or_update(
            rg, NIC_B, done, headers={"If-Match": stale}, **ENFORCE
        ).result()
        fail(step, "a PUT with a stale If-Match was accepted")
    except HttpResponseError as e:
        if e.status_code != 412:
            fail(step, f"status {e.status_code} ({e.error.code if e.error else e}), want 412")
        report(step, ok=True, status=e.status_code, code=e.error.code if e.error else None)

    # 4. Route PUT as an LRO.
    step = "route.begin_create_or_update"
    route = client.routes.get(rg, ROUTE_TABLE, ROUTE, **ENFORCE)
    new_hop = nic_b.ip_configurations[0].private_ip_address
    route.next_hop_ip_address = new_hop
    r = client.routes.begin_create_or_update(rg, ROUTE_TABLE, ROUTE, route, **ENFORCE).result()
    if r.next_hop_ip_address != new_hop or r.provisioning_state != "Succeeded":
        fail(step, f"route is {r.next_hop_ip_address} / {r.provisioning_state}")
    report(step, ok=True, next_hop=r.next_hop_ip_address)

    # 5. Unknown api-version: ARM's 400 NoRegisteredProviderFound, parsed as a CloudError.
    step = "nic.get_unknown_api_version"
    try:
        client.network_interfaces.get(rg, NIC_A, api_version="2013-01-01", **ENFORCE)
        fail(step, "api-version 2013-01-01 was accepted")
    except HttpResponseError as e:
        code = e.error.code if e.error else None
        if (e.status_code, code) != (400, "NoRegisteredProviderFound"):
            fail(step, f"got {e.status_code} {code}, want 400 NoRegisteredProviderFound")
        report(step, ok=True, status=e.status_code, code=code)

    # 6. The atomic move, with the SDK's own begin_move_ip_configurations (202 +
    #    Azure-AsyncOperation + Location, polled to Succeeded).
    step = "vnet.begin_move_ip_configurations"
    nic_a = client.network_interfaces.get(rg, NIC_A, **ENFORCE)
    src = ipconfig(nic_a, FLOATING)
    body = {
        "moveIpConfigurationItems": [
            {
                "sourceIpConfiguration": {"id": src.id},
                "targetIpConfiguration": {
                    "id": nic_b.id + "/ipConfigurations/" + FLOATING
                },
            }
        ]
    }
    poller = client.virtual_networks.begin_move_ip_configurations(rg, VNET, body, **ENFORCE)
    poller.result()
    if poller.status() != "Succeeded":
        fail(step, f"poller status {poller.status()!r}")
    moved = ipconfig(client.network_interfaces.get(rg, NIC_B, **ENFORCE), FLOATING)
    left = ipconfig(client.network_interfaces.get(rg, NIC_A, **ENFORCE), FLOATING)
    if moved is None or left is not None:
        fail(step, "after the move the floating ipConfiguration is not on NIC B alone")
    if moved.private_ip_address != src.private_ip_address:
        fail(step, f"moved address {moved.private_ip_address}, want {src.private_ip_address}")
    report(step, ok=True, address=moved.private_ip_address)

    # 7. Properties the emulator does not model survive the SDK's GET -> PUT round trip
    #    (the Rust side put them there and checks them afterwards).
    step = "nic.round_trip_keeps_unmodelled"
    nic_b = client.network_interfaces.get(rg, NIC_B, **ENFORCE)
    nic_b.tags = dict(nic_b.tags or {}, roundtrip="1")
    client.network_interfaces.begin_create_or_update(rg, NIC_B, nic_b, **ENFORCE).result()
    report(step, ok=True)

    report("done", ok=True)


if __name__ == "__main__":
    try:
        main()
    except HttpResponseError as e:
        fail("unexpected", f"{e.status_code}: {e.message}")
