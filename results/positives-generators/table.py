"""The README's table from `clsp eval positives`'s metrics.json: python table.py EVAL_DIR/metrics.json"""
import json, sys

r = json.load(open(sys.argv[1]))["results"]
marks = r["store"]["marks"]
aug = marks["two_augmentations"]["similarity"]
print("| generator | setting | class kept (%) | cos to anchor (judge) | harder than 2 augmentations | diversity | within 4 of 0 (%) |")
print("|---|---|---|---|---|---|---|")


def row(generator, setting, x):
    cos = x["similarity"]["synthetic"]
    print(f"| {generator} | {setting} | {x['agreement']:.1f} | {cos:.3f} | {'yes' if cos < aug else 'no'} | "
          f"{x['diversity']:.3f} | {x['pixels']['near_0']:.1f} |")


for x in r["start_sweep"]:
    name = "SDEdit from the anchor (w = 1)" if x["w"] == 1.0 else f"interpolation w = {x['w']:g}, layers 4"
    row(name + (" (the paper's start)" if x["start"] == 1.0 and x["w"] < 1 else ""), f"start {x['start']:g}", x)
for x in r["floor_sweep"]:
    shares = ", ".join(f"{k}: {100 * v:.0f}%" for k, v in sorted(x["strength"]["start_share"].items(), reverse=True))
    row(f"per-candidate start ({x['space']} floor {x['floor']:g}, grid {x['grid']})", f"mean s {x['strength']['start_mean']:.2f} ({shares})", x)
s = r["store"]
print(f"| the store (per-candidate start, {s['n_anchors']} anchors x K = {s['k']}) | mean s {s['strength']['start_mean']:.2f} | "
      f"{s['agreement']:.1f} | {s['similarity']['synthetic']:.3f} | {'yes' if s['similarity']['synthetic'] < aug else 'no'} | "
      f"{s['diversity']:.3f} | {s['pixels']['near_0']:.1f} |")
print(f"| two augmentations of the anchor (SimCLR recipe) | | {marks['two_augmentations']['agreement']:.1f} | {aug:.3f} | | "
      f"{s['augmentation_distance']:.3f} | |")
print(f"| the anchor's nearest real image ({r['real']['n']} real images) | | {marks['nearest_real']['agreement']:.1f} | "
      f"{marks['nearest_real']['similarity']:.3f} | | | |")
print(f"| real test images (the judge's ceiling) / chance | | {r['ceiling']:.1f} / {r['chance']:.1f} | | | | {r['real']['pixels']['near_0']:.1f} |")
