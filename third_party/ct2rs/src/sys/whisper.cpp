// whisper.cpp
//
// Copyright (c) 2023-2024 Junpei Kawamoto
//
// This software is released under the MIT License.
//
// http://opensource.org/licenses/mit-license.php

#include <algorithm>
#include <stdexcept>
#include <utility>
#include <vector>

#include <ctranslate2/ops/concat.h>

#include "ct2rs/src/sys/whisper.rs.h"

#include "ct2rs/include/types.h"

using rust::Slice;
using rust::Vec;

std::unique_ptr<StorageView> Whisper::encode(
    const StorageView& features,
    const bool to_cpu
) const {
    auto future = impl->encode(
        features,
        to_cpu
    );

    StorageView storage_view = future.get();
    return std::make_unique<StorageView>(std::move(storage_view));
}

// whisper-serve addition: on CPU the encoder is faster one window at a time
// (a batch's attention scores, 54 MB a window for tiny, fall out of cache),
// so this runs the windows of a float32 CPU batch through the encoder
// separately and joins the outputs into one batch for generate().
std::unique_ptr<StorageView> Whisper::encode_each(
    const StorageView& features,
    const bool to_cpu
) const {
    const auto batch = features.dim(0);
    if (batch <= 1 || features.device() != Device::CPU
        || features.dtype() != ctranslate2::DataType::FLOAT32) {
        return encode(features, to_cpu);
    }
    const auto per_window = features.size() / batch;
    const ctranslate2::Shape one_shape{1, features.dim(1), features.dim(2)};
    std::vector<StorageView> outputs;
    outputs.reserve(batch);
    for (ctranslate2::dim_t i = 0; i < batch; ++i) {
        // A view into the caller's buffer: no copy of the features.
        StorageView one(one_shape, const_cast<float*>(features.data<float>()) + i * per_window, Device::CPU);
        outputs.emplace_back(impl->encode(one, to_cpu).get());
        if (outputs.back().device() != Device::CPU) {
            // A GPU model: concatenating here would run outside its
            // stream; encode the batch as one instead (no cache problem).
            return encode(features, to_cpu);
        }
    }
    std::vector<const StorageView*> parts;
    parts.reserve(batch);
    for (const auto& o : outputs) {
        parts.push_back(&o);
    }
    StorageView joined(outputs[0].dtype(), outputs[0].device());
    ctranslate2::ops::Concat(0)(parts, joined);
    return std::make_unique<StorageView>(std::move(joined));
}

// whisper-serve addition: one window of an encoded CPU batch, copied into a
// batch of one (its word alignment, after the batch was decoded together).
std::unique_ptr<StorageView> Whisper::encoded_item(
    const StorageView& encoded,
    const size_t index
) const {
    if (encoded.device() != Device::CPU || encoded.dtype() != ctranslate2::DataType::FLOAT32
        || encoded.rank() != 3 || static_cast<ctranslate2::dim_t>(index) >= encoded.dim(0)) {
        throw std::invalid_argument("encoded_item needs a float32 CPU batch [batch, frames, width] and an index in it");
    }
    const auto per_window = encoded.size() / encoded.dim(0);
    StorageView one(ctranslate2::Shape{1, encoded.dim(1), encoded.dim(2)}, ctranslate2::DataType::FLOAT32, Device::CPU);
    const float* from = encoded.data<float>() + index * per_window;
    std::copy(from, from + per_window, one.data<float>());
    return std::make_unique<StorageView>(std::move(one));
}

Vec<WhisperGenerationResult> Whisper::generate(
    const StorageView& features,
    const Slice<const VecStr> prompts,
    const WhisperOptions& opts
) const {
    auto futures = impl->generate(
        features,
        from_rust(prompts),
        ctranslate2::models::WhisperOptions {
            opts.beam_size,
            opts.patience,
            opts.length_penalty,
            opts.repetition_penalty,
            opts.no_repeat_ngram_size,
            opts.max_length,
            opts.sampling_topk,
            opts.sampling_temperature,
            opts.num_hypotheses,
            opts.return_scores,
            opts.return_logits_vocab,
            opts.return_no_speech_prob,
            opts.max_initial_timestamp_index,
            opts.suppress_blank,
            from_rust(opts.suppress_tokens),
        }
    );

    Vec<WhisperGenerationResult> res;
    for (auto& future : futures) {
        const auto& r = future.get();
        res.push_back(WhisperGenerationResult {
            to_rust<VecString>(r.sequences),
            to_rust<VecUSize>(r.sequences_ids),
            to_rust(r.scores),
            r.no_speech_prob,
        });
    }

    return res;
}

Vec<VecDetectionResult> Whisper::detect_language(const StorageView& features) const {
    auto futures = impl->detect_language(features);

    Vec<VecDetectionResult> res;
    for (auto& future : futures) {
        const auto& r = future.get();

        Vec<DetectionResult> pairs;
        for (auto& pair : r) {
            pairs.push_back(DetectionResult {
                std::get<0>(pair),
                std::get<1>(pair),
            });
        }

        res.push_back(VecDetectionResult { pairs });
    }

    return res;
}

Vec<WhisperAlignmentResult> Whisper::align(
    const StorageView& features,
    const Slice<const size_t> start_sequence,
    const Slice<const Vec<size_t>> text_tokens,
    const Slice<const size_t> num_frames,
    int64_t median_filter_width
) const {
    std::vector<size_t> start_sequence_cxx(start_sequence.begin(), start_sequence.end());

    std::vector<std::vector<size_t>> text_tokens_cxx;
    for (auto& seq_text_tokens : text_tokens) {
        text_tokens_cxx.emplace_back(seq_text_tokens.begin(), seq_text_tokens.end());
    }

    std::vector<size_t> num_frames_cxx(num_frames.begin(), num_frames.end());

    auto futures = impl->align(
        features, start_sequence_cxx, text_tokens_cxx, num_frames_cxx, median_filter_width
    );

    Vec<WhisperAlignmentResult> res;
    for (auto& future : futures) {
        const auto& result_cxx = future.get();

        WhisperAlignmentResult result;
        for (auto& token_alignment_cxx : result_cxx.alignments) {
            result.alignments.push_back(
                WhisperTokenAlignment { token_alignment_cxx.first, token_alignment_cxx.second }
            );
        }
        result.text_token_probs = to_rust(result_cxx.text_token_probs);

        res.push_back(result);
    }

    return res;
}
