#!/usr/bin/env python3
"""Reads the emulator's Standard load balancer with the official Azure SDK for Python.

azure-mgmt-network's LoadBalancer model (generated from loadBalancer.json) parses the
emulator's document: if a property were misnamed or mistyped, the model would drop it or fail.
Run by providers/azure-emulator/tests/all/load_balancer.rs. Usage:

    check_load_balancer_with_sdk.py BASE_URL TOKEN SUBSCRIPTION RESOURCE_GROUP NAME

Prints the fields as the SDK's model holds them, as one JSON object. TLS: see
check_emulator_with_sdk.py (`enforce_https=False` per call, azure-core's own switch).
"""

import json
import sys
import time

from azure.core.credentials import AccessToken
from azure.mgmt.network import NetworkManagementClient


class StaticToken:
    def __init__(self, token):
        self._token = token

    def get_token(self, *scopes, **kwargs):
        return AccessToken(self._token, int(time.time()) + 3600)


def main():
    if len(sys.argv) != 6:
        sys.exit("usage: check_load_balancer_with_sdk.py BASE_URL TOKEN SUBSCRIPTION RESOURCE_GROUP NAME")
    base_url, token, sub, rg, name = sys.argv[1:]
    client = NetworkManagementClient(StaticToken(token), sub, base_url=base_url)
    lb = client.load_balancers.get(rg, name, enforce_https=False)
    probe = lb.probes[0]
    rule = lb.load_balancing_rules[0]
    pool = lb.backend_address_pools[0]
    frontend = lb.frontend_ip_configurations[0]
    print(json.dumps({
        "sku": lb.sku.name,
        "frontend_ip": frontend.private_ip_address,
        "frontend_subnet": frontend.subnet.id,
        "probe_protocol": probe.protocol,
        "probe_port": probe.port,
        "probe_path": probe.request_path,
        "probe_interval": probe.interval_in_seconds,
        "probe_threshold": probe.probe_threshold,
        "rule_protocol": rule.protocol,
        "rule_frontend_port": rule.frontend_port,
        "rule_backend_port": rule.backend_port,
        "rule_probe": rule.probe.id,
        "rule_pool": rule.backend_address_pool.id,
        "pool_id": pool.id,
        "pool_members": [c.id for c in (pool.backend_ip_configurations or [])],
    }))


if __name__ == "__main__":
    main()
