"""Export one of timm's vision transformers as a retain `[model] checkpoint`.

    python export_timm_vit.py vit_tiny_patch16_224 out.safetensors [--pretrained] [--num-classes K]

Writes timm's `state_dict` (timm's names are retain's, see retain-models' `vit` docs) as
safetensors and prints the file's sha256 for `[model] checkpoint_sha256`. `--pretrained` loads
timm's pretrained weights (needs them in timm's cache or the hub); without it the weights are
timm's random initialisation. `--num-classes K` (default 1000) sizes the head: for K other
than the pretrained head's, timm drops the pretrained `head.weight`/`head.bias` and the file
holds timm's fresh K-class head, so it loads into a retain run of a K-class stream (e.g. 10 for
Split-MNIST). A model with tensors retain's ViT has no place for (a register token, layer
scale, `fc_norm`, a pre-norm) is refused rather than exported in part.

Supported: vit_tiny_patch16_224, vit_small_patch16_224, vit_base_patch16_224 (retain's
`preset` values); pair them with `normalize = "inception"` for timm's augreg weights (mean and
std 0.5) or `"imagenet"`, as the model's `pretrained_cfg` says (printed too).
"""
import argparse
import hashlib
import re

import timm
from safetensors.torch import save_file

PRESETS = ("vit_tiny_patch16_224", "vit_small_patch16_224", "vit_base_patch16_224")
RETAIN_NAMES = re.compile(
    r"^(cls_token|pos_embed|patch_embed\.proj\.(weight|bias)|norm\.(weight|bias)|head\.(weight|bias)"
    r"|blocks\.\d+\.(norm1|norm2|attn\.qkv|attn\.proj|mlp\.fc1|mlp\.fc2)\.(weight|bias))$"
)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("model", choices=PRESETS)
    parser.add_argument("out")
    parser.add_argument("--pretrained", action="store_true")
    parser.add_argument("--num-classes", type=int, default=1000)
    args = parser.parse_args()
    model = timm.create_model(args.model, pretrained=args.pretrained, num_classes=args.num_classes)
    state = {k: v.detach().contiguous() for k, v in model.state_dict().items()}
    foreign = sorted(k for k in state if not RETAIN_NAMES.match(k))
    if foreign:
        raise SystemExit(f"{args.model} has tensors retain's ViT lacks: {', '.join(foreign)}")
    save_file(state, args.out)
    digest = hashlib.sha256(open(args.out, "rb").read()).hexdigest()
    cfg = model.pretrained_cfg
    print(f"# timm {timm.__version__}, {sum(v.numel() for v in state.values()):,} parameters, "
          f"mean {cfg.get('mean')} std {cfg.get('std')}")
    print(f'preset = "{args.model}"\ncheckpoint = "{args.out}"\ncheckpoint_sha256 = "{digest}"')


if __name__ == "__main__":
    main()
