"""The training methods, registered by name: what differs between them (which parameters train, how captions
read, what is saved and proven) sits behind the `Method` interface; the loop names none of them."""

from __future__ import annotations

from peftlab.errors import UserInputError
from trainer.engine.config import TrainingConfig
from trainer.engine.methods.base import AdapterMethod, Method
from trainer.engine.methods.lora import KOHYA_WEIGHTS, LORA_WEIGHTS, DoraMethod, LoraMethod
from trainer.engine.methods.lycoris import PEFT_CONFIG, PEFT_WEIGHTS, LohaMethod, LokrMethod, OftMethod
from trainer.engine.methods.textual_inversion import TI_WEIGHTS, SplicedEmbedding, TextualInversionMethod

# Method name -> its class (whose `config_class` is the dataclass of its options), as PEFT maps its PeftType.
METHODS: dict[str, type[Method]] = {
    method.config_class.method: method
    for method in (LoraMethod, DoraMethod, LohaMethod, LokrMethod, OftMethod, TextualInversionMethod)
}

__all__ = [
    "KOHYA_WEIGHTS",
    "LORA_WEIGHTS",
    "METHODS",
    "PEFT_CONFIG",
    "PEFT_WEIGHTS",
    "TI_WEIGHTS",
    "AdapterMethod",
    "Method",
    "SplicedEmbedding",
    "make_method",
]


def make_method(config: TrainingConfig) -> Method:
    """The method object for a config."""
    method = METHODS.get(config.method)
    if method is None or type(config) is not method.config_class:
        raise UserInputError(f"no training method for {type(config).__name__}.")
    return method(config)
