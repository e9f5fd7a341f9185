"""Kill -9 during POST /v1/indexes (create) and DELETE /v1/indexes/NAME.
After restart: server ready? each index fully present (docs intact) or fully gone? can we re-create / re-delete it?
usage: python3 scen_catalog.py [rounds_per_delay]"""
import sys, threading, time, os, json, subprocess
sys.path.insert(0, "/tmp/explore-fault")
from flib import *
PORT = 7725
data = fresh("catalog")
p = start(data, PORT); ok, b, t = wait_ready(PORT, proc=p); assert ok, b
R = int(sys.argv[1]) if len(sys.argv) > 1 else 2
bugs = []; rnd = 0; acked = 0
for op in ["create", "delete"]:
  for delay in [0, 0.001, 0.003, 0.005, 0.02, 0.1]:
    for r in range(R):
        rnd += 1
        name = f"c{rnd}"
        m = Model()
        if op == "delete":
            st, b = create_index(PORT, name); assert st in (200, 201), (st, b)
            docs = [doc(i, 1, pad=5) for i in range(3000)]
            st, b = http(PORT, "POST", f"/v1/indexes/{name}/documents?refresh=wait_for", ndjson(docs), "application/x-ndjson", timeout=60)
            assert st == 200; m.ack([(d["id"], 1) for d in docs]); acked += 3000
            http(PORT, "POST", f"/v1/indexes/{name}/snapshots")
        res = {}
        if op == "create":
            th = threading.Thread(target=lambda: res.setdefault("r", create_index(PORT, name)))
        else:
            th = threading.Thread(target=lambda: res.setdefault("r", http(PORT, "DELETE", f"/v1/indexes/{name}")))
        th.start(); time.sleep(delay); kill9(p); th.join()
        resp = res["r"][0]
        ondisk = sorted(os.listdir(data))
        sub = sorted(os.listdir(f"{data}/{name}")) if os.path.isdir(f"{data}/{name}") else None
        p = start(data, PORT); ok, b, t = wait_ready(PORT, 20, proc=p)
        if not ok:
            log(f"round {rnd} {op} delay={delay} resp={resp}: NOT READY {b[:600]} ondisk={ondisk} sub={sub}")
            bugs.append((rnd, op, delay, "not ready", b[:600], sub))
            kill9(p)
            break
        st, b = http(PORT, "GET", "/v1/indexes")
        names = [x["name"] for x in json.loads(b)["indexes"]]
        present = name in names
        probs = []
        if resp in (200, 201) and op == "create" and not present: probs.append("acked create but index missing")
        if resp == 200 and op == "delete" and present: probs.append("acked delete but index present")
        if present:
            # fully there? search & docs
            st, b = http(PORT, "GET", f"/v1/indexes/{name}/search?q=common&limit=1")
            if st != 200: probs.append(f"index listed but search {st} {b[:200]}")
            if op == "delete" and st == 200:
                tot = json.loads(b)["total"]
                if tot != 3000: probs.append(f"half-deleted: {tot} of 3000 docs")
                probs += check(PORT, name, m, sample=100, refresh=False)
            # can we write to it?
            st, b = http(PORT, "POST", f"/v1/indexes/{name}/documents", ndjson([doc(99999, 1)]), "application/x-ndjson")
            if st != 200: probs.append(f"write to listed index: {st} {b[:200]}")
            st, b = http(PORT, "DELETE", f"/v1/indexes/{name}")
            if st != 200: probs.append(f"delete listed index: {st} {b[:200]}")
        else:
            if os.path.exists(f"{data}/{name}"):
                probs.append(f"index not listed but folder left on disk: {sorted(os.listdir(f'{data}/{name}'))}")
            st, b = create_index(PORT, name)
            if st not in (200, 201): probs.append(f"re-create after kill: {st} {b[:300]}")
            else:
                st, b = http(PORT, "GET", f"/v1/indexes/{name}/search?q=common&limit=1")
                if st == 200 and json.loads(b)["total"] != 0: probs.append(f"re-created index has stale docs total={json.loads(b)['total']}")
        log(f"round {rnd} {op} delay={delay} resp={resp} present_after={present} sub_before_restart={sub} probs={probs}")
        if probs: bugs.append((rnd, op, delay, probs))
log("rounds", rnd, "acked docs", acked, "bugs", bugs)
kill9(p)
