"""Real ``vllm serve`` command lines parse the same under ``s1-serve``.

``s1-serve`` parses its command line with vLLM's own parser (server/api/cli.py). This file
holds a corpus of command lines published in vLLM's documentation, the vLLM recipes,
the production-stack Helm chart, the LeaderWorkerSet examples and deployment guides,
each with its source. Each line is parsed twice:

* as ``vllm serve`` does: ``make_arg_parser(FlexibleArgumentParser())``, then
  ``model_tag -> model`` and ``validate_parsed_serve_args`` (vllm/entrypoints/cli/serve.py);
* by ``server.api.cli.parse``;

and the two namespaces are compared field by field over every vLLM argument. The only
differences allowed are s1-serve's documented defaults, asserted exactly: ``host`` is
127.0.0.1 when the line sets none (vLLM: all interfaces), ``served_model_name`` is
``[model]`` when the line sets none (vLLM's None means the same name), and ``api_key`` is
the merged list (``--api-key``, else ``VLLM_API_KEY``). A line that differs in any other
field is a parsing bug of s1-serve and fails here, naming the field.

What s1-serve's command line adds to vLLM's (S1_<DEST> variables, the old spellings, the
version check) is test_cli_overrides; the engine's batch defaults, test_cli_batch_defaults.
"""

from __future__ import annotations

import shlex
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from tests.vllm_serve import field_diffs, s1_expected, vllm_serve_args

pytestmark = pytest.mark.usefixtures("clean_cli_env")

RECIPES = "https://github.com/vllm-project/recipes/blob/main/"
VLLM_DOCS = "https://github.com/vllm-project/vllm/blob/main/docs/"
STACK = "https://github.com/vllm-project/production-stack/blob/main/"
LWS = "https://github.com/kubernetes-sigs/lws/blob/main/"


@dataclass(frozen=True)
class Line:
    """A published command line: what follows ``vllm serve`` (or
    ``python -m vllm.entrypoints.openai.api_server``, the same parser), the files it
    names (written to the working directory first, e.g. its ``--config`` YAML) and the
    environment it is started with."""

    id: str
    source: str
    line: str
    files: dict[str, str] = field(default_factory=dict)
    env: dict[str, str] = field(default_factory=dict)

    @property
    def argv(self) -> list[str]:
        return shlex.split(self.line)


DUMMY_CHAT_TEMPLATE = ("{% for message in messages %}{{message['role'] + ': ' + "
                       "message['content'] + '\\n'}}{% endfor %}")

CORPUS = [
    # ---------------------------------------------------------------- vLLM's docs
    Line("openai-server-api-key", VLLM_DOCS + "serving/openai_compatible_server.md",
         "NousResearch/Meta-Llama-3-8B-Instruct --dtype auto --api-key token-abc123"),
    Line("serve-args-config", VLLM_DOCS + "configuration/serve_args.md",
         "--config config.yaml",
         files={"config.yaml": 'model: meta-llama/Llama-3.1-8B-Instruct\nhost: "127.0.0.1"\n'
                               'port: 6379\nuvicorn-log-level: "info"\n'}),
    Line("serve-args-config-positional-wins", VLLM_DOCS + "configuration/serve_args.md",
         "SOME_MODEL --config config.yaml",
         files={"config.yaml": 'model: meta-llama/Llama-3.1-8B-Instruct\nhost: "127.0.0.1"\n'
                               'port: 6379\nuvicorn-log-level: "info"\n'}),
    Line("lora-modules", VLLM_DOCS + "features/lora.md",
         "meta-llama/Llama-3.2-3B-Instruct --enable-lora "
         "--lora-modules sql-lora=jeeejeee/llama32-3b-text2sql-spider"),
    Line("lora-modules-json", VLLM_DOCS + "features/lora.md (new --lora-modules format, with "
         "the page's model)",
         "meta-llama/Llama-3.2-3B-Instruct --enable-lora --lora-modules "
         "'{\"name\": \"sql-lora\", \"path\": \"jeeejeee/llama32-3b-text2sql-spider\", "
         "\"base_model_name\": \"meta-llama/Llama-3.2-3B-Instruct\"}'"),
    Line("lora-default-mm-loras", VLLM_DOCS + "features/lora.md",
         "ibm-granite/granite-speech-3.3-2b --max-model-len 2048 --enable-lora "
         "--default-mm-loras '{\"audio\":\"ibm-granite/granite-speech-3.3-2b\"}' "
         "--max-lora-rank 64"),
    Line("lora-target-modules", VLLM_DOCS + "features/lora.md",
         "model --enable-lora --lora-target-modules o_proj qkv_proj down_proj"),
    Line("nginx-docker-model", VLLM_DOCS + "deployment/nginx.md",
         "--model meta-llama/Llama-2-7b-chat-hf"),
    Line("lws-leader", VLLM_DOCS + "deployment/frameworks/lws.md",
         "--port 8080 --model meta-llama/Meta-Llama-3.1-405B-Instruct "
         "--tensor-parallel-size 8 --pipeline_parallel_size 2"),
    Line("root-path-vllm-api-key", "https://github.com/vllm-project/vllm/blob/main/tests/"
         "entrypoints/openai/test_root_path.py (server args, VLLM_API_KEY in its env)",
         "Qwen/Qwen2-1.5B-Instruct --dtype float16 --enforce-eager --max-model-len 4080 "
         f"--root-path /llm --chat-template {shlex.quote(DUMMY_CHAT_TEMPLATE)}",
         env={"VLLM_API_KEY": "abc-123"}),
    Line("serve-args-yaml-tp", "https://www.mintlify.com/vllm-project/vllm/configuration/"
         "serve-args", "--config config.yaml",
         files={"config.yaml": "model: meta-llama/Llama-3.1-8B-Instruct\nhost: \"127.0.0.1\"\n"
                               "port: 8000\ntensor-parallel-size: 2\n"
                               "uvicorn-log-level: \"info\"\nenable-log-requests: true\n"}),
    Line("serve-args-uds", "https://www.mintlify.com/vllm-project/vllm/configuration/"
         "serve-args", "MODEL --uds /tmp/vllm.sock"),
    # ------------------------------------------------------------- vLLM recipes
    Line("llama33-hopper-config", RECIPES + "Llama/Llama3.3-70B.md (launch_server.sh, "
         "Llama3.3_Hopper.yaml, DTYPE=FP8)",
         "nvidia/Llama-3.3-70B-Instruct-FP8 --config Llama3.3_Hopper.yaml "
         "--tensor-parallel-size 1",
         files={"Llama3.3_Hopper.yaml": "kv-cache-dtype: fp8\nasync-scheduling: true\n"
                                        "no-enable-prefix-caching: true\n"
                                        "max-num-batched-tokens: 8192\n"}),
    Line("llama33-blackwell-config", RECIPES + "Llama/Llama3.3-70B.md (launch_server.sh, "
         "Llama3.3_Blackwell.yaml, DTYPE=FP4)",
         "nvidia/Llama-3.3-70B-Instruct-FP4 --config Llama3.3_Blackwell.yaml "
         "--tensor-parallel-size 1",
         files={"Llama3.3_Blackwell.yaml":
                "kv-cache-dtype: fp8\ncompilation-config: '{\"pass_config\":{\"fuse_allreduce_"
                "rms\":true,\"fuse_attn_quant\":true,\"eliminate_noops\":true}}'\n"
                "async-scheduling: true\nno-enable-prefix-caching: true\n"
                "max-num-batched-tokens: 8192\n"}),
    Line("deepseek-v32-exp-tp8", RECIPES + "DeepSeek/DeepSeek-V3_2-Exp.md",
         "deepseek-ai/DeepSeek-V3.2-Exp -tp 8"),
    Line("deepseek-v32-exp-dp8-ep", RECIPES + "DeepSeek/DeepSeek-V3_2-Exp.md",
         "deepseek-ai/DeepSeek-V3.2-Exp -dp 8 --enable-expert-parallel"),
    Line("deepseek-v31-served-name", RECIPES + "DeepSeek/DeepSeek-V3_1.md",
         "deepseek-ai/DeepSeek-V3.1 --enable-expert-parallel --tensor-parallel-size 8 "
         "--served-model-name ds31"),
    Line("deepseek-v32-tools-reasoning", RECIPES + "DeepSeek/DeepSeek-V3_2.md",
         "deepseek-ai/DeepSeek-V3.2 --tensor-parallel-size 8 --tokenizer-mode deepseek_v32 "
         "--tool-call-parser deepseek_v32 --enable-auto-tool-choice "
         "--reasoning-parser deepseek_v3"),
    Line("ring-1t-fp8-kv", RECIPES + "inclusionAI/Ring-1T-FP8.md (MI300x/MI325x/MI355x)",
         "inclusionAI/Ring-1T-FP8 --trust-remote-code --tensor-parallel-size 8 "
         "--gpu-memory-utilization 0.9 --max-num-seqs 32 --kv-cache-dtype fp8 "
         "--served-model-name Ring-1T-FP8"),
    Line("step37-nvfp4-spec", RECIPES + "StepFun/Step-3.7-Flash.md",
         "stepfun-ai/Step-3.7-Flash-NVFP4 --served-model-name step3p7 "
         "--tensor-parallel-size 4 --gpu-memory-utilization 0.9 --enable-expert-parallel "
         "--trust-remote-code --quantization modelopt --kv-cache-dtype fp8 "
         "--reasoning-parser step3p5 --enable-auto-tool-choice --tool-call-parser step3p5 "
         "--speculative-config '{\"method\": \"mtp\", \"num_speculative_tokens\": 3}' "
         "--async-scheduling"),
    Line("gemma4-modal-two-names", RECIPES + "Google/gemma4-modal.py (cmd joined by ' ', "
         "MODEL_NAME, MODEL_REVISION, VLLM_PORT=8000, FAST_BOOT=False, N_GPU=1)",
         "google/gemma-4-26B-A4B-it --revision 47b6801b24d15ff9bcd8c96dfaea0be9ed3a0301 "
         "--served-model-name google/gemma-4-26B-A4B-it llm --host 0.0.0.0 --port 8000 "
         "--uvicorn-log-level=info --async-scheduling --no-enforce-eager "
         "--tensor-parallel-size 1 --limit-mm-per-prompt "
         "'{\"image\": 0, \"video\": 0, \"audio\": 0}' --enable-auto-tool-choice "
         "--reasoning-parser gemma4 --tool-call-parser gemma4"),
    Line("glm47-dotted-json", RECIPES + "GLM/GLM.md",
         "zai-org/GLM-4.7-FP8 --tensor-parallel-size 4 --speculative-config.method mtp "
         "--speculative-config.num_speculative_tokens 1 --tool-call-parser glm47 "
         "--reasoning-parser glm45 --enable-auto-tool-choice"),
    Line("deepseek-ocr-underscores", RECIPES + "DeepSeek/DeepSeek-OCR.md",
         "deepseek-ai/DeepSeek-OCR --logits_processors "
         "vllm.model_executor.models.deepseek_ocr:NGramPerReqLogitsProcessor "
         "--no-enable-prefix-caching --mm-processor-cache-gb 0"),
    Line("qwen3-next-prefix-caching", RECIPES + "Qwen/Qwen3-Next.md",
         "Qwen/Qwen3-Next-80B-A3B-Instruct --tensor-parallel-size 4 "
         "--served-model-name qwen3-next --enable-prefix-caching"),
    Line("qwen3-next-mtp", RECIPES + "Qwen/Qwen3-Next.md",
         "Qwen/Qwen3-Next-80B-A3B-Instruct --tokenizer-mode auto --gpu-memory-utilization 0.8 "
         "--speculative-config '{\"method\": \"qwen3_next_mtp\", \"num_speculative_tokens\": 2}'"
         " --tensor-parallel-size 4 --no-enable-chunked-prefill"),
    Line("ministral3-underscores", RECIPES + "Mistral/Ministral-3-Instruct.md",
         "mistralai/Ministral-3-14B-Instruct-2512 --tokenizer_mode mistral "
         "--config_format mistral --load_format mistral --enable-auto-tool-choice "
         "--tool-call-parser mistral"),
    Line("ernie45-fp8", RECIPES + "Ernie/Ernie4.5.md",
         "baidu/ERNIE-4.5-300B-A47B-PT --tensor-parallel-size 8 --gpu-memory-utilization=0.95 "
         "--quantization fp8"),
    Line("gpt-oss-batch-flags", RECIPES + "OpenAI/GPT-OSS.md",
         "openai/gpt-oss-120b --tensor_parallel_size 8 --max-model-len 131072 "
         "--max-num-batched-tokens 10240 --max-num-seqs 128 --gpu-memory-utilization 0.85 "
         "--no-enable-prefix-caching"),
    Line("paddleocr-batched-tokens", RECIPES + "PaddlePaddle/PaddleOCR-VL.md",
         "PaddlePaddle/PaddleOCR-VL --trust-remote-code --max-num-batched-tokens 16384 "
         "--no-enable-prefix-caching --mm-processor-cache-gb 0"),
    Line("mellum2-max-model-len-auto", RECIPES + "models/JetBrains/Mellum2-12B-A2.5B-"
         "Instruct.yaml (Docker AMD MI300X)",
         "JetBrains/Mellum2-12B-A2.5B-Instruct --max-model-len auto --trust-remote-code "
         "--tensor-parallel-size 1"),
    # ----------------------------------------------------------- production-stack
    Line("stack-helm-basic-config", STACK + "helm/templates/deployment-vllm-multi.yaml "
         "rendered with tutorials/assets/values-02-basic-config.yaml",
         "meta-llama/Llama-3.1-8B-Instruct --host 0.0.0.0 --port 8000 "
         "--no-enable-chunked-prefill --no-enable-prefix-caching --max-model-len 4096 "
         "--dtype bfloat16 --gpu-memory-utilization 0.8"),
    Line("stack-helm-secure-vllm-api-key", STACK + "helm/templates/deployment-vllm-multi.yaml "
         "rendered with tutorials/assets/values-11-secure-vllm.yaml (vllmApiKey -> "
         "VLLM_API_KEY)",
         "facebook/opt-125m --host 0.0.0.0 --port 8000",
         env={"VLLM_API_KEY": "abc123XYZ987"}),
    Line("stack-router-e2e-backend", STACK + ".github/workflows/router-e2e-test.yml",
         "facebook/opt-125m --port 8001 --gpu-memory-utilization 0.7 "
         "--chat-template tests/assets/template-chatml.jinja",
         files={"tests/assets/template-chatml.jinja":
                "{% for message in messages %}{{'<|im_start|>' + message['role'] + '\\n' + "
                "message['content'] + '<|im_end|>' + '\\n'}}{% endfor %}"}),
    # --------------------------------------------------------------------- LWS
    Line("lws-tpu", LWS + "docs/examples/vllm/TPU/lws.yaml",
         "--port 8080 --model meta-llama/Llama-3.3-70B-Instruct --tensor-parallel-size=16"),
    Line("lws-tas", LWS + "site/content/en/docs/examples/tas.md",
         "--port 8080 --model deepseek-ai/DeepSeek-R1 --tensor-parallel-size 8 "
         "--pipeline-parallel-size 2 --trust-remote-code --max-model-len 4096"),
    # --------------------------------------------------------- deployment guides
    Line("cors-allowed-origins", "https://github.com/P2Enjoy/local-opencode-stack/blob/main/"
         "MODELS.md",
         "model --host 0.0.0.0 --port 8000 --api-key sk-your-secret-key "
         "--allowed-origins '[\"https://example.com\"]'"),
    # Flags the issue lists for which no published full command line was found: the
    # flag syntax of vLLM's CLI reference (https://docs.vllm.ai/en/latest/cli/serve/),
    # on the model of the OpenAI-compatible server page.
    Line("constructed-ssl-max-log-len", "constructed from the --ssl-keyfile, --ssl-certfile, "
         "--max-log-len and --enable-log-requests entries of "
         "https://docs.vllm.ai/en/latest/cli/serve/",
         "NousResearch/Meta-Llama-3-8B-Instruct --ssl-keyfile /etc/vllm/tls.key "
         "--ssl-certfile /etc/vllm/tls.crt --enable-log-requests --max-log-len 256"),
]



def write_files(line: Line, monkeypatch: pytest.MonkeyPatch) -> None:
    for name, text in line.files.items():
        path = Path(name)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    for name, value in line.env.items():
        monkeypatch.setenv(name, value)


def test_corpus_size_and_sources() -> None:
    assert len(CORPUS) >= 25
    assert len({line.id for line in CORPUS}) == len(CORPUS)
    assert all(line.source for line in CORPUS)
    text = " ".join(line.line + " ".join(line.files.values()) for line in CORPUS)
    for flag in ("kv-cache-dtype fp8", "kv-cache-dtype: fp8", "--enable-prefix-caching",
                 "max-num-batched-tokens", "--lora-modules", "--config", "--uvicorn-log-level",
                 "--ssl-keyfile", "--root-path", "--max-log-len", "-tp 8", "--api-key"):
        assert flag in text, f"the corpus has no line with {flag}"
    def names(argv: list[str]) -> list[str]:
        rest = argv[argv.index("--served-model-name") + 1:]
        return rest[:next((i for i, a in enumerate(rest) if a.startswith("-")), len(rest))]

    assert any(len(names(line.argv)) >= 2 for line in CORPUS
               if "--served-model-name" in line.argv), (
        "the corpus has no --served-model-name with two names")


@pytest.mark.parametrize("line", CORPUS, ids=[line.id for line in CORPUS])
def test_line_parses_as_vllm_serve(line: Line, monkeypatch: pytest.MonkeyPatch) -> None:
    from server.api.cli import VLLM_OWNED, parse

    write_files(line, monkeypatch)
    vllm_args = vllm_serve_args(line.argv)
    try:
        args, settings = parse(line.argv)
    except SystemExit as exc:
        pytest.fail(f"{line.source}: `vllm serve {line.line}` parses, `s1-serve` exits: {exc}")
    expected = s1_expected(vllm_args, line.env.get("VLLM_API_KEY"))
    diffs = field_diffs(vars(args), expected)
    assert not diffs, (f"{line.source}: `{line.line}` parses differently under s1-serve "
                       f"(field: (s1-serve, expected from vllm serve)): {diffs}")
    # The mirror the API layer reads (server/settings.py) holds the same values.
    for name in VLLM_OWNED:
        value = getattr(vllm_args, name, None)
        if value is None or name in ("served_model_name", "log_level"):
            continue
        assert getattr(settings, name) == value, (
            f"{line.source}: Settings.{name}={getattr(settings, name)!r}, vLLM parsed {value!r}")
    assert settings.model_name == expected["served_model_name"][0]
    assert settings.api_keys == (expected["api_key"] or [])
    assert settings.cors_origins == expected["allowed_origins"]


REMOVED = [  # arguments vLLM 0.32 no longer takes: s1-serve must stop the same way
    Line("ring-1t-fp8-use-inductor", RECIPES + "inclusionAI/Ring-1T-FP8.md (8xH200)",
         "inclusionAI/Ring-1T-FP8 --trust-remote-code --tensor-parallel-size 8 "
         "--gpu-memory-utilization 0.97 --max-num-seqs 32 --kv-cache-dtype fp8 "
         "--compilation-config '{\"use_inductor\": false}' --served-model-name Ring-1T-FP8"),
    Line("ernie45-vl-disable-log-requests", RECIPES + "Ernie/Ernie4.5-VL.md",
         "baidu/ERNIE-4.5-VL-28B-A3B-PT --tensor-parallel-size 4 --gpu-memory-utilization 0.9 "
         "--disable-log-requests --trust-remote-code"),
    Line("qwen3-amd-swap-space", RECIPES + "Qwen/Qwen3.md",
         "Qwen/Qwen3-235B-A22B --trust-remote-code -tp 4 --disable-log-requests "
         "--swap-space 32 --distributed-executor-backend mp --max-num-batched-tokens 32768 "
         "--max-model-len 32768 --no-enable-prefix-caching --gpu-memory-utilization 0.8"),
]


@pytest.mark.parametrize("line", REMOVED, ids=[line.id for line in REMOVED])
def test_line_vllm_rejects_is_rejected(line: Line, capsys: pytest.CaptureFixture) -> None:
    from server.api.cli import parse

    with pytest.raises(SystemExit) as vllm_exit:
        vllm_serve_args(line.argv)
    vllm_err = capsys.readouterr().err
    with pytest.raises(SystemExit) as s1_exit:
        parse(line.argv)
    s1_err = capsys.readouterr().err
    assert s1_exit.value.code == vllm_exit.value.code == 2
    assert "error: " in vllm_err and "error: " in s1_err
    assert s1_err[s1_err.index("error: "):] == vllm_err[vllm_err.index("error: "):], (
        "s1-serve's usage error differs from vLLM's")

