"""Pretrained keras-hub backbones as MatTA Students: convert, train, extract back.

- `from_keras_hub(backbone, ta_intermediate_dim, ...)`: a Mat backbone (TA) whose nested
  Student is the pretrained GPT-2 / Llama / Llama 3 / Qwen / Gemma 1-3 backbone;
- `keras_matta.extract(mat_model, widths)`: any width back as the source keras-hub class;
- `LogitsModel(backbone)`: token ids -> logits, the model MatTA trains, or a Teacher;
- `load_gguf_llama(path)`: a llama.cpp GGUF checkpoint (e.g. SmolLM2) as a `Llama3Backbone`.

Importing this package imports keras-hub (and with it TensorFlow).
"""

from keras_matta.hub.backbone import MatBackbone
from keras_matta.hub.convert import from_keras_hub
from keras_matta.hub.gemma import MatGemmaBackbone
from keras_matta.hub.gemma3 import MatGemma3Backbone
from keras_matta.hub.gemma3_attention import MatGemma3Attention
from keras_matta.hub.gemma3_decoder import MatGemma3Decoder
from keras_matta.hub.gemma_attention import MatGemmaAttention
from keras_matta.hub.gemma_decoder import MatGemmaDecoder
from keras_matta.hub.gguf_loader import GGUFFile
from keras_matta.hub.gguf_loader import load_gguf_llama
from keras_matta.hub.gguf_loader import load_gguf_tokenizer
from keras_matta.hub.gpt2 import MatGPT2Backbone
from keras_matta.hub.llama import MatLlamaBackbone
from keras_matta.hub.llama_attention import MatLlamaAttention
from keras_matta.hub.llama_decoder import MatLlamaDecoder
from keras_matta.hub.logits import LogitsModel
