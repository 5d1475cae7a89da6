"""How fast can a flood be sorted into lanes, before any parse?

Classification reads MSH-9/MSH-11 and the priority segments from raw bytes;
it is what stands between a billing flood and the CPU. Measured on the public
corpus and on the generated feed (a billing flood with STAT results in it),
with a full parse-to-model beside it for scale.
"""

from __future__ import annotations

from _harness import Contender, arguments, corpus_messages, fail_if, measure, report

from engine.core.decode import Decoder
from engine.core.feedgen import generate_feed
from lanes import Classifier


def main() -> None:
    args = arguments(__doc__ or "")
    corpus, data = corpus_messages()
    flood = generate_feed(200 if args.quick else 2000, seed=2)
    classifier = Classifier()
    decoder = Decoder(classifier)

    def to_model(raw: bytes) -> object:
        return decoder.hl7(raw, received_at="t", source="bench")

    contenders = [
        Contender("classify, corpus", "lane and reason from raw bytes", classifier.classify_hl7, corpus),
        Contender("classify, generated flood", "same, on a 60% billing flood", classifier.classify_hl7, flood),
        Contender("to model, generated flood", "classify + parse + map, for scale", to_model, flood),
    ]
    rounds = args.rounds or (1 if args.quick else 3)
    measure(contenders, rounds, budget_s=0.15 if args.quick else 1.0)
    extra = {
        "classify_corpus_messages_per_s": round(contenders[0].best_per_s),
        "goal": "classification >= 100,000 messages/s on the corpus",
    }
    report("Lane classification throughput", f"{data}; generated flood of {len(flood)}", contenders, extra, args.json)
    fail_if(any(c.failures for c in contenders), "classification failed on a valid message")


if __name__ == "__main__":
    main()
