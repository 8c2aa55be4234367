"""Rewrite the cpu300 status block of docs/results-cpu300.md from the
committed runs of the profile, in the profile's run order, and its copies of committed tables (`<!-- table:NAME -->`)
from results/cpu300/tables (tests/test_cpu300_results.py checks the block and the copies against
the runs). Run from the repository root after committing new runs: `python tools/cpu300_status.py`."""
import json, re, sys
from pathlib import Path
from kdrepro.experiments import Experiment

root = Path(".")
runs = root / "results" / "runs"
page = root / "docs" / "results-cpu300.md"
DEV = {"AMD EPYC": "AMD EPYC", "Intel(R) Xeon(R) Processor": "Intel Xeon", "NVIDIA H200": "NVIDIA H200",
       "cpu": "not recorded (Intel Xeon)"}


def label(c: dict) -> str:
    if c["method"] == "ce":
        return "teacher (wrn_16_2)" if c["model"] == "wrn_16_2" else "vanilla student"
    if c["method"] == "kd":
        return "KD at SLKD's steps" if c["epochs"] == 226 else "KD"
    cur = c["curriculum"]
    if cur["pacing"] == "full":
        return "SLKD, pacing full (KD + MSE term)"
    if (c["losses"].get("mse") or {}).get("weight", 0) == 0:
        return "SLKD, without MSE term"
    if cur["order"] != "easy_first":
        return "SLKD, " + cur["order"].replace("_", " ")
    return "SLKD"


configs = Experiment("cpu300", results_dir="results").all_configs()
rows = []
for cfg in configs:
    d = runs / cfg.run_id
    if not (d / "summary.json").exists():
        continue
    s = json.loads((d / "summary.json").read_text())
    if not s.get("finished"):
        continue
    c = json.loads((d / "config.json").read_text())
    env = s["environment"]
    dev = DEV.get(env["device_name"], env["device_name"])
    if env.get("cpu_model") and env["cpu_model"] != "unknown":  # a CPU's kind is its name and model
        dev += f" ({env['cpu_model']})"
    rows.append(f"| {label(c)} | {s['epochs']} | {s['seed']} | {s['last_top1']:.2f} | {s['best_top1']:.2f} | "
                f"{s['iterations']:,} | {round(s['wall_seconds'] / 60)} | {dev} | `{cfg.run_id}` |")
text = page.read_text()
block = re.search(r"<!-- cpu300-status -->\n(.*?)<!-- /cpu300-status -->", text, re.S)
old = block.group(1)
head, _, rest = old.partition("| run |")
table_head = "| run |" + rest.split("\n", 2)[0] + "\n" + rest.split("\n", 2)[1] + "\n"
new = (f"{len(rows)} of {len(configs)} runs finished.\n" + head.partition("\n")[2] + table_head
       + "\n".join(rows) + "\n\n</details>\n")
page.write_text(text.replace(old, new))
print(f"{len(rows)} of {len(configs)} runs listed")

# copies of committed tables in the results page and README, between `<!-- table:NAME -->` (or
# `<!-- table:NAME cols: A; B; C -->`, those columns only) and `<!-- /table:NAME -->`
# (tests/test_cpu300_results.py checks each copy against results/cpu300/tables/NAME.md)
def table_rows(name: str, cols: str | None) -> str:
    lines = [line for line in (root / "results" / "cpu300" / "tables" / f"{name}.md").read_text().splitlines()
             if line.startswith("|")]
    if not cols:
        return "".join(line + "\n" for line in lines)
    cells = [[c.strip() for c in line.strip().strip("|").split("|")] for line in lines]
    keep = [cells[0].index(c.strip()) for c in cols.split(";")]
    return "".join("| " + " | ".join(row[i] for i in keep) + " |\n" for row in cells)


for path in (page, root / "README.md"):
    text = path.read_text()
    for name, cols in re.findall(r"<!-- table:(\w+)(?: cols: (.*?))? -->", text):
        text = re.sub(rf"(<!-- table:{name}(?: cols: [^>]*?)? -->\n).*?(<!-- /table:{name} -->)",
                      lambda m: m.group(1) + table_rows(name, cols) + m.group(2), text, flags=re.S)
        print(f"{path.name}: table {name} copied")
    path.write_text(text)
