"""Evaluation fixtures: the tiny Llama as a ModelBundle, and real-looking closed-answer rows."""

from __future__ import annotations

from pathlib import Path

import pytest

from feddqc_flwr.llm.model import ModelBundle, ModelSpec, load_model_bundle

MEDQA_ROW = {
    "sample_id": "medqa-1", "input": "", "history": [],
    "instruction": "A 67-year-old man with transitional cell carcinoma of the bladder comes to the physician because "
                   "of ringing in his ear. Which of the following actions explains the drug's effect?\n\n"
                   "A. Inhibition of thymidine synthesis\nB. Inhibition of proteasome\n"
                   "C. Hyperstabilization of microtubules\nD. Generation of free radicals\nE. Cross-linking of DNA",
    "response": "E. Cross-linking of DNA",
}
PUBMEDQA_ROWS = [
    {"sample_id": f"pqal-{i}", "instruction": question, "history": [], "response": answer,
     "input": "Context (1): We performed a retrospective cohort study of 717 women.\n"
              "Context (2): Multivariate analysis showed an odds ratio of 1.6 (95% CI 1.2-2.1)."}
    for i, (question, answer) in enumerate([
        ("is the first urinary acr a prognostic factor in preeclampsia?", "yes"),
        ("are behavioural risk factors to be blamed for hypertension?", "no"),
        ("does vitamin d predict outcome after stroke?", "maybe"),
        ("is aspirin protective here?", "yes"),
    ])
]
FREE_ROW = {"sample_id": "fiqa-0", "instruction": "Should I pay off my mortgage early?", "input": "", "history": [],
            "response": "It depends on the interest rate and your other investments."}


@pytest.fixture(scope="module")
def tiny_bundle(tiny_model_dir: Path) -> ModelBundle:
    """The tiny random Llama with a LoRA adapter, as the apps load it."""
    return load_model_bundle(ModelSpec(name=str(tiny_model_dir), dtype="float32"))
