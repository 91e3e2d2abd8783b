from glob import glob

from setuptools import find_packages, setup

package_name = "spartan_ros"

setup(
    name=package_name,
    version="0.1.0",
    packages=find_packages(include=[package_name, f"{package_name}.*"]),
    data_files=[
        ("share/ament_index/resource_index/packages", [f"resource/{package_name}"]),
        (f"share/{package_name}", ["package.xml"]),
        (f"share/{package_name}/launch", glob("launch/*.launch.py")),
        (f"share/{package_name}/config", glob("config/*.yaml")),
    ],
    install_requires=["setuptools"],
    # Runtime dependencies are pinned in requirements/*.txt (installed by scripts/setup.sh).
    extras_require={
        # GPU vehicles: CUDA / TensorRT execution providers (replaces the CPU onnxruntime wheel).
        "gpu": ["onnxruntime-gpu==1.31.1"],
        # Fleet memory on Milvus (memory_backend milvus, fleet_uri, spartan-fleet); milvus-lite
        # runs the engine embedded from a local .db path.
        "fleet": ["pymilvus==3.0.2", "milvus-lite==3.2.2"],
    },
    zip_safe=True,
    maintainer="spartan_ros maintainers",
    maintainer_email="maintainers@example.com",
    description="Searchable visual memory for vehicles (SPARTAN pose-aware video retrieval).",
    license="MIT",
    entry_points={
        "console_scripts": [
            "spartan_node = spartan_ros.node.spartan_node:main",
            "spartan_query = spartan_ros.node.query_client:main",
            "spartan-bag = spartan_ros.bag.cli:main",
            "spartan-fleet = spartan_ros.fleet.cli:main",
        ],
    },
)
