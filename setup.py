from glob import glob

from setuptools import find_packages, setup

package_name = "spartan_ros"

setup(
    name=package_name,
    version="0.1.0",
    packages=find_packages(include=[package_name, f"{package_name}.*"]),
    # The tokenizer's BPE vocabulary (OpenAI CLIP, MIT licence) travels with the package.
    package_data={package_name: ["vocab/*.txt.gz", "vocab/NOTICE.md", "dds/fastdds.xml"]},
    data_files=[
        ("share/ament_index/resource_index/packages", [f"resource/{package_name}"]),
        (f"share/{package_name}", ["package.xml"]),
        (f"share/{package_name}/launch", glob("launch/*.launch.py")),
        (f"share/{package_name}/config", glob("config/*.yaml")),
        # the Fast DDS profile for large images, where a camera driver's user can point at it
        (f"share/{package_name}/config", [f"{package_name}/dds/fastdds.xml"]),
    ],
    install_requires=["setuptools"],
    # Runtime dependencies: package.xml (rosdep keys) and requirements/vehicle.txt, or
    # requirements/vehicle-gpu.txt on a GPU vehicle (one ONNX Runtime, never both); see
    # docs/install.md. Not repeated here, so pip never pulls the CPU wheel beside the GPU one.
    zip_safe=False,  # the tokenizer opens its vocabulary as a file
    extras_require={
        # Fleet memory on Milvus (memory_backend milvus, fleet_uri, spartan-fleet); milvus-lite
        # runs the engine embedded from a local .db path. Pinned in requirements/fleet.txt.
        "fleet": ["pymilvus==3.0.2", "milvus-lite==3.2.2"],
    },
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
