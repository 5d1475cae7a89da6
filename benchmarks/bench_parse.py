"""How fast does Vigil parse HL7 v2 to its model, against the `hl7` and `hl7apy` packages?

Vigil's contenders start from the raw bytes (BOM, any line ends, charset) and
do all their own decoding; the peers get ready-made text with CR line ends,
prepared outside their timing. The ratio that matters is "to the model"
(envelope and clinical events) against the peers' full tree.
"""

from __future__ import annotations

import hl7
from _harness import Contender, arguments, corpus_messages, fail_if, measure, peer_text, report
from hl7apy.parser import parse_message

from engine.core.decode import Decoder
from engine.core.hl7 import parse


def main() -> None:
    args = arguments(__doc__ or "")
    raws, data = corpus_messages()
    texts = [peer_text(r) for r in raws]
    decoder = Decoder()
    # Sanity before timing: every message decodes, or the numbers would flatter.
    for raw in raws:
        decoder.hl7(raw, received_at="t", source="bench")

    def vigil_model(raw: bytes) -> object:
        return decoder.hl7(raw, received_at="t", source="bench")

    def split_only(text: str) -> object:
        return [line.split("|") for line in text.split("\r")]

    contenders = [
        Contender("split only", "str.split into segments and fields; no model (the floor)", split_only, texts),
        Contender("vigil lazy parse", "decode + cut into segments; fields on demand", parse, raws),
        Contender("vigil to model", "classify + parse + map: envelope and clinical events", vigil_model, raws),
        Contender("hl7 0.4.5", "hl7.parse: full tree of segments/fields/components", hl7.parse, texts),
        Contender(
            "hl7apy 1.3.5",
            "parse_message: full tree with groups (tolerant)",
            parse_message,
            texts,
            max_messages=12 if args.quick else 60,
        ),
    ]
    rounds = args.rounds or (1 if args.quick else 3)
    measure(contenders, rounds, budget_s=0.15 if args.quick else 1.0)
    by_name = {c.name: c for c in contenders}
    model = by_name["vigil to model"].best_per_s
    extra = {
        "ratio_to_model_vs_hl7": round(model / by_name["hl7 0.4.5"].best_per_s, 1),
        "ratio_to_model_vs_hl7apy": round(model / by_name["hl7apy 1.3.5"].best_per_s, 1),
        "goal": "to-model >= 20x hl7 and >= 400x hl7apy",
    }
    report("HL7 v2 parse throughput", data, contenders, extra, args.json)
    fail_if(by_name["vigil to model"].failures > 0, "Vigil failed on a message it decoded before timing")


if __name__ == "__main__":
    main()
