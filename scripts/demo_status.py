"""Facts from a `cloudha status --json` document, for scripts/demo-azure.sh.

Usage: demo_status.py WHAT JSON, WHAT one of: cloud, mine, takeover, failover, ready.
"""
import json
import sys


def main() -> None:
    what, doc = sys.argv[1], json.loads(sys.argv[2])
    cloud = doc.get("cloud") or {}
    failover = doc.get("last_failover") or {}
    def ms(key: str, prefix: str = "") -> str:
        value = failover.get(key)
        return "-" if value is None else f"{prefix}{value} ms"

    if what == "cloud":
        names = {"me": doc["node"], "peer": doc["peer"]["name"], "nobody": "NOBODY", "both": "BOTH"}
        held = [f"{r['resource']} on {names.get(r['holder'], r['holder'])}" for r in cloud.get("resources", [])]
        print(", ".join(held) or "-")
    elif what == "mine":
        resources = cloud.get("resources", [])
        print("yes" if resources and all(r["holder"] == "me" for r in resources) else "no")
    elif what == "takeover":
        takeover = doc["takeover"]
        print(takeover["state"])
        for p in takeover["pending"]:
            print("P", p["id"], p["elapsed_ms"], p["description"], sep="\t")
        for o in failover.get("operations", []):
            print("F", o["id"], o["elapsed_ms"], o["outcome"], sep="\t")
    elif what == "failover":
        calls = failover.get("api_calls", {})
        waited = failover.get("api_call_ms", {})
        listed = ", ".join(
            f"{k} {v} in {waited[k]} ms" if k in waited else f"{k} {v}"
            for k, v in sorted(calls.items())
        )
        print(
            f"detection {ms('detection_ms')}, first API request {ms('first_request_ms', '+')},"
            f" first write {ms('first_write_ms', '+')}, converged {ms('total_ms', '+')}"
            f" after the decision, {sum(calls.values())} API calls ({listed})"
        )
    elif what == "ready":
        failing = [i["name"] for i in doc["indicators"] if not i["ok"]]
        print("ready" if doc["ready"] else "not ready: " + ", ".join(failing))


if __name__ == "__main__":
    main()
