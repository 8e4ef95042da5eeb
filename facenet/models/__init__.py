"""Embedding models: the model files (`zoo`), the exact Keras twins (`dlib_resnet`, `sface`), the residual
`adapter`, names (`names`), building a model with a gallery's fine-tuned weights (`build`, `trained`), the weights
folder's caches (`cache`, `tflite`) and the batched forward pass (`embed`)."""
