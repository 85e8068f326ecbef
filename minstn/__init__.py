"""minstn: a minimal NumPy/CuPy LSTM spatial transformer network.

Subpackages:
    minstn.ops        every layer as an explicit forward/backward pair of functions
    minstn.gradcheck  the finite-difference gradient checker used by tests and tutorials
    minstn.data       MNIST loading and the MNIST-sequence data set
    minstn.models     CNN, FFN-STN-CNN and LSTM-STN-CNN, built from minstn.ops
    minstn.backend    device selection (NumPy on 'cpu', CuPy on 'gpu' / 'gpu:N')
    minstn.bench      benchmarks: `python -m minstn.bench {ops,gpu,train}`
"""

__version__ = "0.1.0"
