"Write the shipped checkpoint and its record: stage 1 (the previous record), stage 2 (its state file), the pilots."
import json
from pathlib import Path
from amtutorial.data_utils import get_cache_dir
from amtutorial.image_et import ImageETConfig, load_et, pretrained_path, save_et
from amtutorial.training import read_state_meta, shipped_recipe, stages_record, TrainConfig

here = Path(__file__).parent
old = json.loads(pretrained_path().with_suffix(".json").read_text())
assert "stages" not in old, "the record already holds the stages"
# stage 1 predates the move of the descent settings (12 steps of 0.1) from the recipe into the model's configuration
s1 = {**old, "init": "random", "train_config": {k: v for k, v in old["train_config"].items() if k not in ("nsteps", "alpha")}}
assert (old["train_config"]["nsteps"], old["train_config"]["alpha"]) == (12, 0.1)
out = get_cache_dir("training") / "et_fashion_mnist_stage2.npz"
s2 = read_state_meta(out)[0]
assert TrainConfig.from_dict(s2["train_config"]) == shipped_recipe()[1] and s2["step"] == shipped_recipe()[1].steps
names = {"shipped": "stage 1, no fine-tune", "mse_lr5e-4": "squared error only, lr 5e-4",
         "ssim1": "+ SSIM term, weight 1", "ssim1_flip": "+ SSIM term, weight 1, + left-right flips",
         "ssim3": "+ SSIM term, weight 3", "ssim1_lr1e-3": "+ SSIM term, weight 1, lr 1e-3"}
levers = [{"lever": names[r["name"]] + ("" if r["name"] == "shipped" else " (400 steps)"),
           "val_psnr": r["psnr"], "val_ssim": r["ssim"]} for r in map(json.loads, open(here / "pilots.jsonl"))]
levers += [{"lever": f"stage 1, descent of {r['nsteps']} steps of {r['alpha']:g}", "val_psnr": r["psnr"],
            "val_ssim": r["ssim"]} for r in map(json.loads, open(here / "sweep_inference.jsonl"))
           if (r["nsteps"], r["alpha"]) != (12, 0.1)]
record = stages_record([s1, s2], ["squared error", "squared error + SSIM, from stage 1"], data=old["data"], levers=levers)
save_et(load_et(out, ImageETConfig.fashion_mnist()), pretrained_path())
pretrained_path().with_suffix(".json").write_text(json.dumps(record, indent=1))
print(json.dumps({k: v for k, v in record.items() if k != "levers"})[:600])
