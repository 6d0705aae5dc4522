"Pilot fine-tunes from the shipped checkpoint: which levers help masked PSNR and SSIM on validation images."
import sys, time, json, argparse
import numpy as np, jax, jax.numpy as jnp, jax.random as jr, equinox as eqx, optax
from amtutorial.image_et import get_pretrained_et, random_masks, reconstruct
from amtutorial.data_utils import load_fashion_mnist
from amtutorial.metrics import masked_psnr, masked_ssim
from amtutorial.training import TrainConfig, make_optimizer

p = argparse.ArgumentParser()
p.add_argument("--name", required=True); p.add_argument("--steps", type=int, default=400)
p.add_argument("--lr", type=float, default=5e-4); p.add_argument("--bs", type=int, default=32)
p.add_argument("--ssim", type=float, default=0.0); p.add_argument("--flip", type=int, default=0)
p.add_argument("--alpha", type=float, default=None); p.add_argument("--nsteps", type=int, default=None)
p.add_argument("--vis", type=float, default=0.1); p.add_argument("--l1", type=float, default=0.0)
a = p.parse_args()

model = get_pretrained_et()
if a.alpha or a.nsteps:
    model = model.with_settings(**{k: v for k, v in dict(alpha=a.alpha, nsteps=a.nsteps).items() if v})
conf = model.config
imgs = load_fashion_mnist("train")[0]
n_val = 1000
train_x = np.asarray(conf.normalize(imgs[:-n_val, ..., None].astype(np.float32) / 255))
val_pix = imgs[-n_val:].astype(np.float32) / 255
val_m = np.asarray(random_masks(jr.fold_in(jr.key(0), 2**31 - 1), n_val, conf, 0.5))
hid = np.asarray(conf.patcher.pixel_mask(val_m))

def box(x, w=7):  # uniform filter with reflect padding, (n, h, w)
    r = w // 2
    xp = jnp.pad(x, ((0, 0), (r, r), (r, r)), mode="symmetric")
    k = jnp.ones((w, w)) / w**2
    return jax.vmap(lambda im: jax.scipy.signal.convolve2d(im, k, mode="valid"))(xp)

def ssim_map(x, y):
    c1, c2, w = 0.01**2, 0.03**2, 7
    cov = w * w / (w * w - 1)
    mx, my = box(x), box(y)
    vx = cov * (box(x * x) - mx * mx); vy = cov * (box(y * y) - my * my); vxy = cov * (box(x * y) - mx * my)
    return ((2 * mx * my + c1) * (2 * vxy + c2)) / ((mx**2 + my**2 + c1) * (vx + vy + c2))

def loss_fn(model, images, masks):
    recon = jax.vmap(lambda x, m: model.inpaint(x, m)[0])(images, masks)
    hidden = model.config.patcher.pixel_mask(masks)[..., None]
    se = (recon - images) ** 2
    l = (se * hidden).sum() / hidden.sum() + a.vis * (se * ~hidden).sum() / (~hidden).sum()
    if a.l1: l = l + a.l1 * (jnp.abs(recon - images) * hidden).sum() / hidden.sum()
    if a.ssim:
        pr = jnp.clip(model.denormalize(recon), 0, 1)[..., 0]; tg = model.denormalize(images)[..., 0]
        s = ssim_map(pr, tg); h = hidden[..., 0]
        l = l + a.ssim * (1 - (s * h).sum() / h.sum())
    return l

cfg = TrainConfig(steps=max(a.steps, 1), lr=a.lr, warmup=max(1, min(50, a.steps // 4)), batch_size=a.bs)
opt = make_optimizer(cfg)
st = opt.init(eqx.filter(model, eqx.is_array))

@eqx.filter_jit
def step(model, st, x, m):
    l, g = eqx.filter_value_and_grad(loss_fn)(model, x, m)
    u, st = opt.update(g, st, eqx.filter(model, eqx.is_array))
    return eqx.apply_updates(model, u), st, l

def evaluate(model):
    rec = reconstruct(model, val_pix, val_m)
    return float(masked_psnr(rec, val_pix, hid).mean()), float(masked_ssim(rec, val_pix, hid).mean())

res = {"name": a.name, "args": vars(a)}
if a.steps == 0:
    res["psnr"], res["ssim"] = evaluate(model)
else:
    t0 = time.time()
    for t in range(a.steps):
        rng = np.random.default_rng([7, t])
        idx = rng.integers(0, len(train_x), a.bs)
        x = train_x[idx]
        if a.flip: x = np.where(rng.random(a.bs)[:, None, None, None] < 0.5, x[:, :, ::-1], x)
        m = random_masks(jr.fold_in(jr.key(7), t), a.bs, conf, 0.5)
        model, st, l = step(model, st, jnp.asarray(x), m)
        if t % 100 == 0: print(t, float(l), f"{time.time()-t0:.0f}s", flush=True)
    res["sec_per_step"] = (time.time() - t0) / a.steps
    res["psnr"], res["ssim"] = evaluate(model)
print(json.dumps(res), flush=True)
open(__import__("pathlib").Path(__file__).with_name("pilots.jsonl"), "a").write(json.dumps(res) + "\n")
