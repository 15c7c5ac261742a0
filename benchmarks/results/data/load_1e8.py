"""10^8-row Taobao-shaped log: generate, load through the cache (build), load again (hit).
Each step in its own process so that its peak memory (VmHWM) is its own."""
import json, os, subprocess, sys
OUT = sys.argv[1]  # usage: python load_1e8.py OUT.json 1e8
N = int(float(sys.argv[2]))
csv = f"/tmp/big/taobao-{N}.csv"
step = r'''
import json, sys, time
def peak():
    return next(int(l.split()[1]) for l in open("/proc/self/status") if l.startswith("VmHWM")) / 1024
what, csv, N = sys.argv[1], sys.argv[2], int(sys.argv[3])
start = time.perf_counter()
if what == "generate":
    from stseq.data.generate import generate_log
    generate_log(csv, events=N, users=N // 100, items=N // 25, seed=0)
    info = {}
else:
    from stseq.data.cache import load_cached
    data, status = load_cached("taobao", csv, "/tmp/big/cache", integer_ids=True)
    info = {"status": status, "events": int(len(data.items)), "users": int(data.num_users),
            "items": int(data.num_items)}
print(json.dumps({"step": what, "seconds": time.perf_counter() - start, "peak_mib": peak(), **info}))
'''
results = {"rows": N, "threads": os.cpu_count(), "load_start": os.getloadavg(), "steps": []}
for what in ("generate", "load", "load"):
    if what == "generate" and os.path.exists(csv):
        continue
    r = subprocess.run([sys.executable, "-c", step, what, csv, str(N)], capture_output=True, text=True)
    line = r.stdout.strip().splitlines()[-1] if r.stdout.strip() else json.dumps({"step": what, "error": r.stderr[-2000:]})
    print(line, flush=True)
    results["steps"].append(json.loads(line))
    results["load_end"] = os.getloadavg()
    json.dump(results, open(OUT, "w"), indent=1)
