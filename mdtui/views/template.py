"""The experiments.toml offered in a folder that has none: the ``demo`` group, which needs no data.

Taken from the project's own experiments.toml (tests/views/test_template.py holds that it loads and
holds the demo group), so a first user sees something runnable instead of "file not found".
"""

from __future__ import annotations

from pathlib import Path

TEMPLATE = """\
# mdtui experiments -- made from mdtui's template. `mdtui validate` checks this file, `mdtui list`
# shows every experiment it expands to. Tables: [settings], [defaults] (merged under every
# experiment) and [experiment.NAME]; docs/configuration.md lists every key.
#
# The `demo` group below runs on small embedded digits data (no download): r in mdtui, or
# `mdtui demo`. Add your own experiments after it.

[settings]
runs_dir = "runs"
results_log = "RESULTS.md"
# data_root = "~/datasets"
# exclude_devices = ["3"]          # GPUs mdtui never uses
# max_devices = 4                  # most GPUs held by mdtui runs at once
runs_per_device = 1
min_free_memory_mb = 2048
max_utilization = 90

# The reference recipe (reference-spec.md §4): SGD 0.9 / 5e-4, batch 128, 200 epochs,
# lr 0.1 with the "custom" schedule: 5 warm-up epochs, then x0.01 at epochs 160 and 180.
[defaults]
epochs = 200
batch_size = 128
optim = { name = "sgd", lr = 0.1, momentum = 0.9, weight_decay = 5e-4 }
schedule = { name = "warmup_step", warmup_epochs = 5, milestones = [160, 180], factor = 0.01 }

# =============================================================================================
# demo: the embedded digits data made long-tailed (ρ = 10); all four runs take a few minutes on
# a laptop CPU. `mdtui demo` runs them in dependency order.
# =============================================================================================

[experiment.demo-ce]
group = "demo"
baseline = true
description = "CE baseline, ResNet-32 on long-tailed digits"
tags = ["demo"]
model = "resnet32"
data = { name = "digits", imbalance_ratio = 10 }  # 8x8 digits upscaled to 32 px
epochs = 15
batch_size = 32
optim = { lr = 0.02 }  # 0.05+ makes the first epochs of this tiny set erratic
schedule = { name = "cosine" }

[experiment.demo-refl]
extends = "demo-ce"
description = "REFL (threshold 0.4) instead of CE"
loss = { name = "refl", threshold = 0.4 }

[experiment.demo-md]
extends = "demo-ce"
from = "demo-ce"
description = "Model Doctor: diagnose the CE model's last conv, then treat it (fork recipe)"
epochs = 3
optim = { lr = 0.005 }
doctor = { preset = "fork", layers = ["last_conv"], weight = 10, sift = { per_class = 10 } }

[experiment.demo-kernels]
extends = "demo-ce"
from = "demo-ce"
description = "Kernel-masked fine-tuning of the 2 tail classes with CBS + REFL"
epochs = 3
optim = { lr = 0.001 }
loss = { name = "refl", threshold = 0.5 }
sampler = { name = "class_aware", num_samples_cls = 4 }
kernels = { tail_classes = 2, layers = ["all"], sift = { per_class = 10 } }
"""


def write_template(path: Path) -> None:
    """Create ``path`` from the template; never overwrites a file that exists meanwhile."""
    with open(path, "x", encoding="utf-8") as fh:
        fh.write(TEMPLATE)
