"Stage 2 of the shipped recipe: fine-tune the stage-1 model (the current shipped checkpoint) with the SSIM term."
import json, sys, time
from pathlib import Path
from amtutorial.data_utils import get_cache_dir
from amtutorial.image_et import ImageETConfig, get_pretrained_et
from amtutorial.training import TrainConfig, train
cfg = TrainConfig(**json.loads(sys.argv[1]))
print(cfg.to_dict(), flush=True)
out = get_cache_dir("training") / "et_fashion_mnist_stage2.npz"
model, meta = train(cfg, ImageETConfig.fashion_mnist(), out, init=get_pretrained_et(), resume=True)
print(json.dumps({k: v for k, v in meta.items() if k != "pending_losses"}), flush=True)
