"""Golden fixtures for tests/clip_parity.rs: two tiny random-weight Hugging Face CLIPs.

Pinned: torch==2.5.1, transformers==4.46.3. Run from the repository root:

    python3 tests/golden/make_clip_golden.py

Writes tests/golden/clip_tiny_{a,b}/{config.json, model.safetensors, expected.safetensors}.
The two configs differ in every size (widths, patch, image, layers, heads) and in the
activation (quick_gelu / gelu), so a loader that hard-codes any of them fails one of them.
`expected.safetensors` holds the fixed inputs (pixel_values, input_ids with EOT at
different positions) and the reference outputs.
"""
import os

import torch
import transformers
from safetensors.torch import save_file
from transformers import CLIPConfig, CLIPModel

assert torch.__version__.startswith("2.5.1"), torch.__version__
assert transformers.__version__ == "4.46.3", transformers.__version__

HERE = os.path.dirname(os.path.abspath(__file__))

CONFIGS = {
    "a": dict(
        text=dict(hidden_size=32, intermediate_size=64, num_attention_heads=2, num_hidden_layers=2,
                  max_position_embeddings=16, vocab_size=99, hidden_act="quick_gelu", eos_token_id=98,
                  bos_token_id=97, pad_token_id=0),
        vision=dict(hidden_size=32, intermediate_size=64, num_attention_heads=2, num_hidden_layers=2,
                    image_size=16, patch_size=4, num_channels=3, hidden_act="quick_gelu"),
        projection_dim=24,
        seed=1,
    ),
    "b": dict(
        # eos_token_id = 2: Hugging Face's legacy rule pools at the position of the largest id.
        text=dict(hidden_size=48, intermediate_size=96, num_attention_heads=4, num_hidden_layers=3,
                  max_position_embeddings=20, vocab_size=120, hidden_act="gelu", eos_token_id=2,
                  bos_token_id=118, pad_token_id=0, layer_norm_eps=1e-6),
        vision=dict(hidden_size=64, intermediate_size=128, num_attention_heads=4, num_hidden_layers=3,
                    image_size=32, patch_size=8, num_channels=3, hidden_act="gelu", layer_norm_eps=1e-6),
        projection_dim=40,
        seed=2,
    ),
}


def make(name, spec):
    torch.manual_seed(spec["seed"])
    config = CLIPConfig(text_config=spec["text"], vision_config=spec["vision"],
                        projection_dim=spec["projection_dim"])
    model = CLIPModel(config).eval()
    # Random init leaves layer norms at (1, 0) and biases at 0: perturb every
    # parameter so that a swapped weight or bias shows up in the outputs.
    with torch.no_grad():
        for n, p in model.named_parameters():
            if n == "logit_scale":
                continue
            p.add_(0.05 * torch.randn_like(p))
    out_dir = os.path.join(HERE, f"clip_tiny_{name}")
    model.save_pretrained(out_dir, safe_serialization=True)

    t, v = spec["text"], spec["vision"]
    g = torch.Generator().manual_seed(100 + spec["seed"])
    pixel_values = torch.randn(3, v["num_channels"], v["image_size"], v["image_size"], generator=g)
    ctx = t["max_position_embeddings"]
    eos, bos, pad = t["eos_token_id"], t["bos_token_id"], t["pad_token_id"]
    lengths = [3, ctx - 1, 6, ctx]  # EOT at index 2, ctx-2, 5 and the last slot
    rows = []
    for n in lengths:
        # content ids avoid the special ids and stay below the largest-id EOT of config a
        body = torch.randint(3, 90, (n - 2,), generator=g).tolist()
        row = [bos] + body + [eos] + [pad] * (ctx - n)
        rows.append(row)
    input_ids = torch.tensor(rows, dtype=torch.long)
    if eos == 2:
        # Legacy rule: HF pools at argmax(ids), so the end token must be the largest id,
        # as CLIP's EOT 49407 is in the real vocabulary: write vocab_size - 1 there.
        input_ids = input_ids.clone()
        for i, n in enumerate(lengths):
            input_ids[i, n - 1] = t["vocab_size"] - 1
    with torch.no_grad():
        out = model(input_ids=input_ids, pixel_values=pixel_values)
    expected = {
        "pixel_values": pixel_values.contiguous(),
        "input_ids": input_ids.to(torch.int64).contiguous(),
        "eot_positions": torch.tensor([n - 1 for n in lengths], dtype=torch.int64),
        "image_embeds": out.image_embeds.contiguous(),
        "text_embeds": out.text_embeds.contiguous(),
        "logits_per_image": out.logits_per_image.contiguous(),
        "text_pooled": out.text_model_output.pooler_output.contiguous(),
        "image_pooled": out.vision_model_output.pooler_output.contiguous(),
        "text_last_hidden_state": out.text_model_output.last_hidden_state.contiguous(),
    }
    save_file(expected, os.path.join(out_dir, "expected.safetensors"))
    sizes = {f: os.path.getsize(os.path.join(out_dir, f)) for f in os.listdir(out_dir)}
    print(name, sizes)


for name, spec in CONFIGS.items():
    make(name, spec)
