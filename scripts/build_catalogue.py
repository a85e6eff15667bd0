"""Write assets/catalogue.json: the facts about every timm pretrained config and torchvision builder that need a
built network (parameters, multiply-adds, family, prefix tokens, head), read on the meta device by
core.network_facts. Everything else about a zoo model comes from its metadata at run time (core.timm_zoo,
core.torchvision_zoo). Run it again after upgrading timm or torchvision; tests/test_zoo.py checks a sample.

    python scripts/build_catalogue.py [--out FILE]   # 1,424 s on the shared 2-core machine (timm 1.0.31)
"""

import argparse
import json
import sys
import time
import warnings
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import torch  # noqa: E402

from core import catalogue, network_facts  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=catalogue.FILE)
    args = parser.parse_args()
    torch.set_num_threads(1)
    warnings.simplefilter("ignore")
    import timm
    import torchvision
    from torchvision import models as tv

    document = {"format": catalogue.FORMAT, "timm_version": timm.__version__,
                "torchvision_version": torchvision.__version__.split("+")[0],
                "torchvision_columns": list(catalogue.TORCHVISION_COLUMNS),
                "timm_columns": list(catalogue.TIMM_COLUMNS), "torchvision": {}, "timm": {}, "failed": {}}
    for name in tv.list_models(module=tv):
        facts = network_facts.torchvision_facts(name)
        document["torchvision"][name] = catalogue.torchvision_row(facts)
    names = timm.list_models(pretrained=True)
    start = time.monotonic()
    for i, name in enumerate(names):
        try:
            facts = network_facts.timm_facts(name)
        except Exception as error:  # recorded: the registry then derives the facts at get() time
            document["failed"][name] = f"{type(error).__name__}: {str(error)[:200]}"
            continue
        document["timm"][name] = catalogue.timm_row(name, facts)
        if i % 50 == 0:
            sys.stderr.write(f"{i}/{len(names)} {time.monotonic() - start:.0f} s {name}\n")
    text = json.dumps({k: v for k, v in document.items() if k not in ("torchvision", "timm")}, indent=1)[:-2]
    rows = []
    for source in ("torchvision", "timm"):
        body = ",\n".join(f"  {json.dumps(k)}: {json.dumps(v)}" for k, v in document[source].items())
        rows.append(f' "{source}": {{\n{body}\n }}')
    args.out.write_text(text + ",\n" + ",\n".join(rows) + "\n}\n")
    print(f"{len(document['torchvision'])} torchvision, {len(document['timm'])} timm, {len(document['failed'])} failed "
          f"in {time.monotonic() - start:.0f} s -> {args.out}")


if __name__ == "__main__":
    main()
