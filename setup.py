from setuptools import setup

setup(
    name="bnn_toroid",
    version=open("bnn_toroid/_version.py").read().split('"')[1],
    description="Binary and real-valued networks on toroids: packed XNOR-popcount kernels, "
                "symmetry removal and landscape geometry",
    long_description=open("README.md", encoding="utf-8").read(),
    long_description_content_type="text/markdown",
    python_requires=">=3.10",
    packages=["bnn_toroid", "bnn_toroid.network", "bnn_toroid.symmetry", "bnn_toroid.geometry",
              "bnn_toroid.landscape", "bnn_toroid.paths", "bnn_toroid.train", "bnn_toroid.onnx",
              "bnn_toroid.kernels"],
    package_dir={"bnn_toroid.kernels": "kernels"},
    install_requires=["numpy>=1.24", "numba>=0.59", "scipy>=1.10", "torch>=2.1",
                      "scikit-learn>=1.2", "threadpoolctl>=3", "tqdm>=4.60", "matplotlib>=3.6",
                      "onnx>=1.17", "onnxruntime>=1.16"],
    extras_require={
        "test": ["pytest>=7", "hypothesis>=6.80"],
        "bench": ["pytest-benchmark>=4", "psutil>=5"],
        # larq 0.14 runs on TensorFlow 2.16 with Keras 2 (TF_USE_LEGACY_KERAS=1) and numpy<2;
        # tf2onnx 1.16.1 needs protobuf 3.20, which caps onnx below 1.18.
        "larq": ["larq==0.14.0", "tensorflow==2.16.1", "tf-keras==2.16.0", "tf2onnx==1.16.1",
                 "protobuf==3.20.3", "numpy<2", "onnx<1.18"],
        "ray": ["ray==2.60.0"],
    },
    entry_points={"console_scripts": ["bnn-toroid=bnn_toroid.cli:main"]},
)
