import numpy as np, jax.random as jr
from amtutorial.image_et import get_pretrained_et, random_masks
from amtutorial.data_utils import load_fashion_mnist
from amtutorial.metrics import masked_psnr, masked_ssim, nearest_neighbour_fill
conf = get_pretrained_et().config
imgs = load_fashion_mnist("train")[0]; n_val=1000
val_pix = imgs[-n_val:].astype(np.float32) / 255
val_m = np.asarray(random_masks(jr.fold_in(jr.key(0), 2**31 - 1), n_val, conf, 0.5))
hid = np.asarray(conf.patcher.pixel_mask(val_m))
rec = nearest_neighbour_fill(val_pix, hid, imgs[:-n_val].astype(np.float32)/255)
print("NN val", masked_psnr(rec, val_pix, hid).mean(), masked_ssim(rec, val_pix, hid).mean())
