#!/usr/bin/env bash
# Smoke test of the real Jaeger path, without our crate:
#   start Jaeger -> POST one OTLP/HTTP JSON trace -> query /api/v3/traces and /api/traces
#   -> check spans, parent link, error status, event, service name -> stop Jaeger.
# Exits non-zero on any failure. Ports follow the same env vars as run.sh/config.yaml.
# The raw query responses are kept in $JAEGER_RUN_DIR (default ${TMPDIR:-/tmp}/tracing-progress-jaeger).
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
export JAEGER_RUN_DIR=${JAEGER_RUN_DIR:-${TMPDIR:-/tmp}/tracing-progress-jaeger}
export JAEGER_OTLP_HTTP_PORT=${JAEGER_OTLP_HTTP_PORT:-4318}
export JAEGER_QUERY_PORT=${JAEGER_QUERY_PORT:-16686}
otlp=http://127.0.0.1:$JAEGER_OTLP_HTTP_PORT
query=http://127.0.0.1:$JAEGER_QUERY_PORT
service=jaeger-smoke

say() { echo "jaeger-smoke: $*" >&2; }
die() { echo "jaeger-smoke: FAIL: $*" >&2; exit 1; }
command -v curl >/dev/null || die "curl is required"
command -v python3 >/dev/null || die "python3 is required"

bash "$here/run.sh" start >/dev/null
trap 'bash "$here/run.sh" stop || true' EXIT
out=$JAEGER_RUN_DIR

# --- build the trace ------------------------------------------------------------------
rnd_hex() { od -An -N"$1" -tx1 /dev/urandom | tr -d ' \n'; }
trace_id=$(rnd_hex 16); root_id=$(rnd_hex 8); child_id=$(rnd_hex 8)
now_ns=$(date +%s%N)
t0=$(( now_ns - 2000000000 ))          # root:  t0 .. t0+1.5s
t1=$(( t0 + 100000000 ))               # child: t1 .. t1+1s, event at t1+0.5s
cat >"$out/smoke-request.json" <<EOF
{"resourceSpans":[{
  "resource":{"attributes":[
    {"key":"service.name","value":{"stringValue":"$service"}},
    {"key":"smoke.resource","value":{"stringValue":"yes"}}]},
  "scopeSpans":[{
    "scope":{"name":"smoke-scope","version":"0.1.0"},
    "spans":[
      {"traceId":"$trace_id","spanId":"$root_id","name":"smoke-parent","kind":2,
       "startTimeUnixNano":"$t0","endTimeUnixNano":"$(( t0 + 1500000000 ))",
       "attributes":[{"key":"progress.total","value":{"intValue":"10"}}],
       "status":{"code":1}},
      {"traceId":"$trace_id","spanId":"$child_id","parentSpanId":"$root_id","name":"smoke-child","kind":1,
       "startTimeUnixNano":"$t1","endTimeUnixNano":"$(( t1 + 1000000000 ))",
       "attributes":[{"key":"progress.current","value":{"intValue":"7"}},
                     {"key":"smoke.flag","value":{"boolValue":true}},
                     {"key":"smoke.ratio","value":{"doubleValue":0.7}},
                     {"key":"smoke.text","value":{"stringValue":"hello"}}],
       "events":[{"timeUnixNano":"$(( t1 + 500000000 ))","name":"exception",
                  "attributes":[{"key":"exception.message","value":{"stringValue":"boom happened"}},
                                {"key":"exception.type","value":{"stringValue":"SmokeError"}}]}],
       "status":{"code":2,"message":"boom"}}
    ]}]}]}
EOF

code=$(curl -sS -o "$out/smoke-post-response.txt" -w '%{http_code}' -X POST \
  -H 'Content-Type: application/json' --data-binary @"$out/smoke-request.json" "$otlp/v1/traces") \
  || die "POST $otlp/v1/traces failed"
[[ $code == 200 ]] || die "POST $otlp/v1/traces returned HTTP $code: $(cat "$out/smoke-post-response.txt")"
say "posted trace $trace_id (2 spans) to $otlp/v1/traces -> $code $(cat "$out/smoke-post-response.txt")"

# --- query, with retries -----------------------------------------------------------------
rfc3339() { python3 -c 'import sys,datetime; print(datetime.datetime.fromtimestamp(int(sys.argv[1])/1e9, datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%fZ"))' "$1"; }
tmin=$(rfc3339 $(( t0 - 60000000000 ))); tmax=$(rfc3339 $(( now_ns + 60000000000 )))
v3_url="$query/api/v3/traces?query.service_name=$service&query.start_time_min=$tmin&query.start_time_max=$tmax&query.num_traces=20"
legacy_url="$query/api/traces?service=$service"

fetch_until() {  # fetch_until NAME URL CHECK-SPANS -> file $out/NAME.json
  local name=$1 url=$2 want=$3 i code
  for (( i = 0; i < 60; i++ )); do
    code=$(curl -sS -o "$out/$name.json" -w '%{http_code}' "$url" || echo 000)
    if [[ $code == 200 ]] && python3 - "$out/$name.json" "$want" <<'PY'
import json, sys
d = json.load(open(sys.argv[1]))
if "result" in d:
    n = sum(len(ss.get("spans", [])) for rs in d["result"].get("resourceSpans", []) for ss in rs.get("scopeSpans", []))
else:
    n = sum(len(t.get("spans", [])) for t in d.get("data") or [])
sys.exit(0 if n >= int(sys.argv[2]) else 1)
PY
    then say "$name: HTTP 200 after $i retries"; return 0; fi
    sleep 0.5
  done
  die "$name: trace not found after 30s (last HTTP $code): $url -> $(head -c 500 "$out/$name.json")"
}
fetch_until v3-search "$v3_url" 2
fetch_until v3-get "$query/api/v3/traces/$trace_id" 2
fetch_until legacy-search "$legacy_url" 2
fetch_until legacy-get "$query/api/traces/$trace_id" 2
curl -sS -o "$out/legacy-services.json" "$query/api/services"
curl -sS -o "$out/v3-services.json" "$query/api/v3/services"

# --- check -------------------------------------------------------------------------------
python3 - "$out" "$trace_id" "$root_id" "$child_id" "$service" <<'PY'
import json, sys, os
out, trace_id, root_id, child_id, service = sys.argv[1:]
fails = []
def check(cond, msg):
    print(("  ok   " if cond else "  FAIL ") + msg)
    if not cond: fails.append(msg)
def load(n): return json.load(open(os.path.join(out, n + ".json")))
def kv(attrs):  # OTLP JSON attribute list -> {key: python value}
    r = {}
    for a in attrs or []:
        v = a["value"]; (t, x), = v.items() if v else (("empty", None),)
        r[a["key"]] = int(x) if t == "intValue" else x
    return r

for name in ("v3-search", "v3-get"):
    print(f"/api/v3 ({name}):")
    d = load(name)
    rss = d["result"]["resourceSpans"]
    spans = {}
    for rs in rss:
        res = kv(rs["resource"]["attributes"])
        for ss in rs["scopeSpans"]:
            for s in ss["spans"]:
                spans[s["name"]] = (s, res, ss.get("scope", {}))
    check(set(spans) == {"smoke-parent", "smoke-child"}, f"span names {sorted(spans)}")
    p, pres, pscope = spans["smoke-parent"]; c, cres, _ = spans["smoke-child"]
    check(p["traceId"] == trace_id == c["traceId"], f"traceId hex {c['traceId']}")
    check(p["spanId"] == root_id and c["spanId"] == child_id, "spanIds hex")
    check(not p.get("parentSpanId"), "parent has no parentSpanId")
    check(c.get("parentSpanId") == root_id, f"child.parentSpanId == parent.spanId ({c.get('parentSpanId')})")
    check(cres.get("service.name") == service, f"resource service.name {cres.get('service.name')!r}")
    check(pscope.get("name") == "smoke-scope", f"scope.name {pscope.get('name')!r}")
    check(c.get("status", {}).get("code") == 2 and c["status"].get("message") == "boom", f"child status {c.get('status')}")
    check(p.get("status", {}).get("code") == 1, f"parent status {p.get('status')}")
    ca = kv(c.get("attributes"))
    check(ca.get("progress.current") == 7 and ca.get("smoke.flag") is True and ca.get("smoke.text") == "hello", f"child attributes {ca}")
    ev = c.get("events") or []
    check(len(ev) == 1 and ev[0]["name"] == "exception" and kv(ev[0]["attributes"]).get("exception.message") == "boom happened", f"child events {ev}")

for name in ("legacy-search", "legacy-get"):
    print(f"/api/traces ({name}):")
    d = load(name)
    traces = [t for t in d["data"] if t["traceID"] == trace_id]
    check(len(traces) == 1, f"one trace with traceID {trace_id} (data has {len(d['data'])})")
    t = traces[0]
    spans = {s["operationName"]: s for s in t["spans"]}
    check(set(spans) == {"smoke-parent", "smoke-child"}, f"operationNames {sorted(spans)}")
    p, c = spans["smoke-parent"], spans["smoke-child"]
    check(p["references"] == [], "parent has no references")
    check([(r["refType"], r["spanID"]) for r in c["references"]] == [("CHILD_OF", root_id)], f"child references {c['references']}")
    tags = {x["key"]: (x["type"], x["value"]) for x in c["tags"]}
    check(tags.get("error") == ("bool", True), f"tag error={tags.get('error')}")
    check(tags.get("otel.status_code") == ("string", "ERROR"), f"tag otel.status_code={tags.get('otel.status_code')}")
    check(tags.get("otel.status_description") == ("string", "boom"), f"tag otel.status_description={tags.get('otel.status_description')}")
    check(tags.get("progress.current") == ("int64", 7), f"tag progress.current={tags.get('progress.current')}")
    logs = c.get("logs") or []
    fields = {f["key"]: f["value"] for f in logs[0]["fields"]} if logs else {}
    check(len(logs) == 1 and fields.get("event") == "exception" and fields.get("exception.message") == "boom happened", f"logs {logs}")
    proc = t["processes"][c["processID"]]
    check(proc["serviceName"] == service, f"processes[{c['processID']}].serviceName {proc['serviceName']!r}")

print("/api/services:", load("legacy-services").get("data"), " /api/v3/services:", load("v3-services"))

# compact print of what the queries returned
def compact_v3(d):
    for rs in d["result"]["resourceSpans"]:
        print("  resource", kv(rs["resource"]["attributes"]))
        for ss in rs["scopeSpans"]:
            print("   scope", ss.get("scope"))
            for s in ss["spans"]:
                print("    span", json.dumps({k: s[k] for k in s if k not in ("traceId",)}, separators=(",", ":")))
def compact_legacy(d):
    for t in d["data"]:
        print("  trace", t["traceID"], "processes", json.dumps(t["processes"], separators=(",", ":")))
        for s in t["spans"]:
            print("    span", json.dumps({k: s[k] for k in s if k not in ("traceID",)}, separators=(",", ":")))
print("--- /api/v3/traces search result (compact):"); compact_v3(load("v3-search"))
print("--- /api/traces search result (compact):"); compact_legacy(load("legacy-search"))
if fails:
    print(f"{len(fails)} check(s) failed"); sys.exit(1)
print("all checks passed")
PY
say "PASS (raw responses in $out/*.json)"
