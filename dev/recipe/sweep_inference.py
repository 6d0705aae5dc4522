import numpy as np, jax.random as jr, json, time
from amtutorial.image_et import get_pretrained_et, random_masks, reconstruct
from amtutorial.data_utils import load_fashion_mnist
from amtutorial.metrics import masked_psnr, masked_ssim
model = get_pretrained_et(); conf = model.config
imgs = load_fashion_mnist("train")[0]; n_val = 1000
val_pix = imgs[-n_val:].astype(np.float32) / 255
val_m = np.asarray(random_masks(jr.fold_in(jr.key(0), 2**31 - 1), n_val, conf, 0.5))
hid = np.asarray(conf.patcher.pixel_mask(val_m))
for ns, al in [(12, .1), (8, .1), (16, .1), (24, .1), (12, .07), (12, .14), (24, .05)]:
    t = time.time(); rec = reconstruct(model, val_pix, val_m, nsteps=ns, alpha=al)
    r = dict(nsteps=ns, alpha=al, psnr=float(masked_psnr(rec, val_pix, hid).mean()), ssim=float(masked_ssim(rec, val_pix, hid).mean()), s=time.time()-t)
    print(json.dumps(r), flush=True)
