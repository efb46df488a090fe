"""Take the aligned model away: the champion of a finished round as a PEFT adapter folder (or a
merged full model), with its tokenizer, a model card and the matching data export; optionally
pushed to a Hugging Face model repo.

- `champion`: which model (the champion after a finished round) and what its card states;
- `card`: the model card (README.md with Hub front matter) and its metric chart (SVG);
- `folder`: writing the export atomically, and the zip for the organizer page;
- `push`: the push (private unless asked to publish).
"""
