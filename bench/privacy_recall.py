"""How much private data the privacy scan finds, and how many look-alikes it flags.

    .venv/bin/python -m bench.privacy_recall [--seeds 5] [--per-kind 4] [--look-alikes 2000]
                                             [--all-locales]

Private data: Faker's providers for each locale of tests/fakes/private_data.py, respelled as
people type and paste them (fullwidth, no-break and zero-width spaces, other scripts' digits,
lower-case IBANs, `00` prefixes, extensions), each in a sentence; `--all-locales` takes
every Faker locale that writes all four kinds (about 100, half of them never tuned on).
Look-alikes: generated orders, dates, times, versions, serials, lots, measurements, amounts,
readings. Scanned with
the default policy's detector, as `POST /v1/route` scans the text of a chat request. Prints
recall by kind and overall, the look-alikes flagged, and the misses of the first seed.
"""

from __future__ import annotations

import argparse
import collections

from gateway.routing.pii import default_detector
from tests.fakes.private_data import LOCALES, all_locales, look_alikes, private_samples


def main() -> None:
    ap = argparse.ArgumentParser(description="privacy scan recall and false alarms")
    ap.add_argument("--seeds", type=int, default=5)
    ap.add_argument("--per-kind", type=int, default=4)
    ap.add_argument("--look-alikes", type=int, default=2000)
    ap.add_argument("--all-locales", action="store_true")
    args = ap.parse_args()
    locales = all_locales() if args.all_locales else list(LOCALES)
    find = default_detector().find
    total: collections.Counter[str] = collections.Counter()
    found: collections.Counter[str] = collections.Counter()
    flagged = checked = 0
    misses = []
    for seed in range(1, args.seeds + 1):
        for s in private_samples(per_kind=args.per_kind, seed=seed, locales=locales):
            total[s.kind] += 1
            if find(s.text):
                found[s.kind] += 1
            elif seed == 1:
                misses.append((s.kind, s.locale, s.text))
        texts = look_alikes(count=args.look_alikes, seed=seed)
        checked += len(texts)
        flagged += sum(1 for t in texts if find(t))
    print(f"{len(locales)} locales, {args.seeds} seeds")
    for kind in sorted(total):
        print(f"  {kind:<6} {found[kind]:>5} / {total[kind]:<5} {found[kind] / total[kind]:.4f}")
    n, k = sum(total.values()), sum(found.values())
    print(f"  all    {k:>5} / {n:<5} {k / n:.4f}")
    print(f"look-alikes flagged: {flagged} / {checked} ({flagged / checked:.4%})")
    for miss in misses:
        print("  missed", miss)


if __name__ == "__main__":
    main()
