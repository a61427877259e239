"""The real llama.cpp path on synthetic models: prompt format, image tiling, budget, sampling, K-quants."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from dataclasses import replace

import pytest
from PIL import Image

from llava_edge import Captioner, GenerationOptions, RuntimeOptions
from llava_edge.errors import ContextOverflowError, RuntimeBackendError
from llava_edge.models.catalog import ModelFiles
from llava_edge.runtime.backend import backend_info
from llava_edge.runtime.engine import LlavaRuntime

PROMPT = "Describe this image in 3-5 vivid sentences."


def picture(width: int, height: int) -> Image.Image:
    return Image.new("RGB", (width, height), (120, 60, 200))


def test_prompt_tokens_follow_the_mistral_instruct_format(captioner: Captioner) -> None:
    runtime = captioner.runtime
    chunks = runtime.layout(picture(300, 200), PROMPT)
    assert [chunk.kind for chunk in chunks] == ["text", "image", "text"]
    head, _, tail = chunks
    assert head.tokens == tuple(runtime.tokenize("[INST] ", add_special=True))
    assert head.tokens[0] == 1  # <s>
    assert tail.tokens == tuple(runtime.tokenize(f"\n{PROMPT} [/INST]"))
    # SentencePiece marks the start of each text piece with one space; the text itself is exact.
    assert runtime.detokenize(head.tokens[1:]) == " [INST] "
    assert runtime.detokenize(tail.tokens) == f" \n{PROMPT} [/INST]"


def test_template_is_pinned_not_taken_from_the_gguf(captioner: Captioner) -> None:
    text = captioner.runtime.prompt_text("Hi")
    assert text == "[INST] <__media__>\nHi [/INST]"
    assert "Answer:" not in text and "USER" not in text


def test_media_marker_in_a_prompt_cannot_add_an_image(captioner: Captioner) -> None:
    chunks = captioner.runtime.layout(picture(64, 64), "look <__media__> here")
    assert [chunk.kind for chunk in chunks] == ["text", "image", "text"]


@pytest.mark.parametrize(
    ("size", "tokens"),
    [((336, 336), 576), ((200, 100), 576), ((336, 672), 1728), ((672, 336), 1728), ((1008, 336), 2304),
     ((672, 672), 2880), ((1600, 1500), 2880)],
)
def test_image_token_counts_follow_llava16_anyres(captioner: Captioner, size: tuple[int, int], tokens: int) -> None:
    chunks = captioner.runtime.layout(picture(*size), PROMPT)
    assert sum(chunk.n_tokens for chunk in chunks if chunk.kind == "image") == tokens


@pytest.mark.parametrize(
    ("size", "detail", "tokens"),
    [((672, 672), "low", 576), ((672, 672), "high", 2880), ((672, 672), "auto", 2880),
     ((480, 400), "auto", 576), ((480, 400), "high", 2880), ((1200, 300), "low", 576)],
)
def test_detail_chooses_the_image_token_budget(
    captioner: Captioner, size: tuple[int, int], detail: str, tokens: int
) -> None:
    chunks = captioner.layout(picture(*size), PROMPT, detail=detail)
    assert sum(chunk.n_tokens for chunk in chunks if chunk.kind == "image") == tokens


def test_default_context_holds_a_full_image(captioner: Captioner) -> None:
    assert RuntimeOptions().n_ctx >= 4096
    assert captioner.runtime.n_ctx >= 4096
    result = captioner.describe(picture(672, 672), PROMPT)
    assert result.timings.image_tokens == 2880 and result.text


def test_a_request_that_cannot_fit_is_refused_before_any_compute(
    tiny_files: ModelFiles, monkeypatch: pytest.MonkeyPatch
) -> None:
    with LlavaRuntime(tiny_files, RuntimeOptions(n_ctx=2048)) as runtime:
        evaluated: list[object] = []
        monkeypatch.setattr(runtime, "_evaluate", lambda *args: evaluated.append(args))
        with pytest.raises(ContextOverflowError) as caught:
            runtime.generate(picture(672, 672), PROMPT, GenerationOptions(max_tokens=64))
    assert evaluated == []
    message = str(caught.value)
    assert "2880 tokens" in message and "max_tokens (64)" in message and "n_ctx 2048" in message
    assert caught.value.to_runware()["code"] == "maxContextLengthExceeded"


def test_max_tokens_bounds_the_answer(captioner: Captioner) -> None:
    result = captioner.describe(picture(100, 100), PROMPT, options=GenerationOptions(max_tokens=5, seed=1))
    assert result.timings.generated_tokens <= 5
    assert result.finish_reason in ("length", "stop")


def test_same_seed_same_answer_and_timings_are_recorded(captioner: Captioner) -> None:
    options = GenerationOptions(max_tokens=16, seed=11, temperature=0.8)
    first = captioner.describe(picture(120, 80), PROMPT, options=options)
    second = captioner.describe(picture(120, 80), PROMPT, options=options)
    other = captioner.describe(picture(120, 80), PROMPT, options=replace(options, seed=12))
    assert first.text == second.text
    assert first.text != other.text
    timings = first.timings
    assert timings.image_tokens == 576 and timings.prompt_tokens > 576
    assert timings.image_encode_s > 0 and timings.image_prefill_s > 0 and timings.total_s >= timings.first_token_s


def test_greedy_sampling_is_deterministic_without_a_seed(captioner: Captioner) -> None:
    options = GenerationOptions(max_tokens=12, temperature=0.0)
    texts = {captioner.describe(picture(90, 90), PROMPT, options=options).text for _ in range(2)}
    assert len(texts) == 1


def test_stop_strings_end_the_answer(captioner: Captioner) -> None:
    options = GenerationOptions(max_tokens=24, seed=5, temperature=0.0)
    full = captioner.describe(picture(50, 50), PROMPT, options=options).text
    word = full.split()[len(full.split()) // 2]
    cut = captioner.describe(picture(50, 50), PROMPT, options=replace(options, stop=(word,))).text
    assert word not in cut and full.startswith(cut)


def test_a_gpu_device_on_a_cpu_only_build_says_how_to_get_one(tiny_files: ModelFiles) -> None:
    if backend_info()["gpu_offload"]:
        pytest.skip("this llama-cpp-python build has GPU offload")
    with pytest.raises(RuntimeBackendError, match="CMAKE_ARGS"):
        LlavaRuntime(tiny_files, RuntimeOptions(device="cuda"))


def test_repack_is_off_by_default() -> None:
    assert RuntimeOptions().repack is False


@pytest.mark.slow
def test_k_quant_model_captions_without_crashing() -> None:
    """A Q4_K_M model with n_embd 256 reaches ggml's AMX K-quant matmul on AMX CPUs when repacking is on
    (llama.cpp #20824): a segfault there kills the subprocess, so this test fails if the guard regresses."""
    script = textwrap.dedent(
        """
        from PIL import Image
        from llava_edge import Captioner, GenerationOptions
        from llava_edge.models.synthetic import build_synthetic_pair
        from llava_edge.runtime.quantize import quantize_gguf
        files = build_synthetic_pair("kquant-small", quantize=quantize_gguf)
        with Captioner(model_path=files.model_path, mmproj_path=files.mmproj_path) as captioner:
            result = captioner.describe(Image.new("RGB", (336, 336), "teal"), "Describe it.",
                                        options=GenerationOptions(max_tokens=8, seed=1))
        print("TOKENS", result.timings.generated_tokens)
        """
    )
    done = subprocess.run([sys.executable, "-c", script], check=False, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, f"exit {done.returncode}: {done.stderr[-2000:]}"
    assert "TOKENS 8" in done.stdout


def test_cancel_stops_a_running_caption_and_the_next_one_runs(tiny_files: ModelFiles) -> None:
    import threading

    from llava_edge.errors import CaptionCancelledError

    with LlavaRuntime(tiny_files, RuntimeOptions(n_ctx=8192, prefix_cache_bytes=0)) as runtime:
        long_answer = GenerationOptions(max_tokens=5000, seed=1, temperature=0.9)
        outcome: list[object] = []

        def caption() -> None:
            try:
                outcome.append(runtime.generate(picture(672, 672), PROMPT, long_answer))
            except CaptionCancelledError as err:
                outcome.append(err)

        worker = threading.Thread(target=caption)
        worker.start()
        threading.Timer(0.3, runtime.cancel).start()
        worker.join(60)
        assert not worker.is_alive()
        assert isinstance(outcome[0], CaptionCancelledError)
        after = runtime.generate(picture(64, 64), PROMPT, GenerationOptions(max_tokens=4, seed=1))
        assert after.timings.generated_tokens == 4
