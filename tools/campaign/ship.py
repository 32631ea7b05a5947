"""Copy the campaign's finished records from uncommitted-free trees into the repository's results/ as
gzip-compressed reference records (mtime 0: the same record gives the same bytes). A failed run or a
record from a dirty tree is named and not shipped.
    CAMPAIGN=/work/runs python tools/campaign/ship.py"""
import gzip
import json
import os
from pathlib import Path

src = Path(os.environ.get("CAMPAIGN", "/work/runs")) / "results"
dst = Path(__file__).resolve().parents[2] / "results"
n = 0
for p in sorted(src.rglob("*.json")):
    rec = json.loads(p.read_text())
    if rec.get("status") != "completed" or (rec.get("git") or {}).get("dirty") is not False:
        print("not shipped:", p, rec.get("status"), (rec.get("git") or {}).get("dirty"))
        continue
    out = dst / p.relative_to(src)
    out = out.with_name(out.name + ".gz")
    data = gzip.compress(p.read_bytes(), mtime=0)
    if out.exists() and out.read_bytes() == data:
        continue
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_bytes(data)
    n += 1
print(n, "records shipped")
