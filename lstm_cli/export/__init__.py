"""Deployable files from a trained model, and checkpoints from a framework's weights.

* ``onnx_graph``: an ONNX model (standard ``LSTM`` operators, the head, normalisation and
  the label list inside) for onnxruntime and other ONNX runtimes; ``onnx_transforms``: the
  checkpoint's input transforms (per-sequence z-score, pool, frame) as graph nodes;
* ``torch_state``: an ``nn.LSTM`` + ``nn.Linear`` state_dict in a safetensors file, with
  the module definition that loads it;
* ``checkpoint_from_state``: such a safetensors state_dict back to an lstm_cli checkpoint.

The optional packages (onnx, safetensors) are loaded with ``lstm_cli.extras.require`` when
a function runs, never at import. docs/export.md describes the files and the commands.
"""
