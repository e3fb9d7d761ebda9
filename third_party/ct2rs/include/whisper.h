// whisper.h
//
// Copyright (c) 2023-2024 Junpei Kawamoto
//
// This software is released under the MIT License.
//
// http://opensource.org/licenses/mit-license.php

#pragma once

#include <memory>
#include <vector>

#include <ctranslate2/models/whisper.h>

#include "rust/cxx.h"

#include "config.h"
#include "model_memory_reader.h"

using ctranslate2::StorageView;

struct VecStr;
struct VecDetectionResult;
struct WhisperOptions;
struct WhisperGenerationResult;
struct WhisperTokenAlignment;
struct WhisperAlignmentResult;

class Whisper {
private:
    std::unique_ptr<ctranslate2::models::Whisper> impl;

public:
    Whisper(std::unique_ptr<ctranslate2::models::Whisper> impl)
        : impl(std::move(impl)) { }

    std::unique_ptr<StorageView>
    encode(const StorageView& features, const bool to_cpu) const;

    std::unique_ptr<StorageView>
    encode_each(const StorageView& features, const bool to_cpu) const;

    std::unique_ptr<StorageView>
    encoded_item(const StorageView& encoded, const size_t index) const;

    rust::Vec<WhisperGenerationResult>
    generate(const StorageView& features, const rust::Slice<const VecStr> prompts, const WhisperOptions& options) const;

    rust::Vec<VecDetectionResult>
    detect_language(const StorageView& features) const;

    rust::Vec<WhisperAlignmentResult>
    align(
        const StorageView& features,
        const rust::Slice<const size_t> start_sequence,
        const rust::Slice<const rust::Vec<size_t>> text_tokens,
        const rust::Slice<const size_t> num_frames,
        int64_t median_filter_width
    ) const;

    inline bool is_multilingual() const {
        return impl->is_multilingual();
    }

    inline size_t n_mels() const {
        return impl->n_mels();
    }

    inline size_t num_languages() const {
        return impl->num_languages();
    }

    inline size_t num_queued_batches() const {
        return impl->num_queued_batches();
    }

    inline size_t num_active_batches() const {
        return impl->num_active_batches();
    }

    inline size_t num_replicas() const {
        return impl->num_replicas();
    }
};

// whisper-serve change: CTranslate2 copies the model for every entry of
// device_indices, even a repeated one ([0, 0] held two copies of the weights:
// +41 MB for tiny, +78 MB for base), while num_replicas_per_device shares one.
// So repeated indices become one index with that many replicas, whenever
// every device gets the same number (CTranslate2's setting is per loader);
// otherwise the list is passed as it is.
inline void group_replicas(ctranslate2::models::ModelLoader& loader, const rust::Slice<const int> indices) {
    std::vector<int> unique;
    std::vector<size_t> counts;
    for (const int index : indices) {
        size_t k = 0;
        while (k < unique.size() && unique[k] != index) {
            ++k;
        }
        if (k == unique.size()) {
            unique.push_back(index);
            counts.push_back(0);
        }
        ++counts[k];
    }
    bool uniform = !unique.empty();
    for (const size_t c : counts) {
        uniform = uniform && c == counts[0];
    }
    if (uniform) {
        loader.device_indices = unique;
        loader.num_replicas_per_device = counts[0];
    } else {
        loader.device_indices = std::vector<int>(indices.begin(), indices.end());
    }
}

inline std::unique_ptr<Whisper> whisper(
    rust::Str model_path,
    std::unique_ptr<Config> config
) {
    ctranslate2::models::ModelLoader model_loader(static_cast<std::string>(model_path));
    model_loader.device = config->device;
    model_loader.compute_type = config->compute_type;
    model_loader.tensor_parallel = config->tensor_parallel;
    group_replicas(model_loader, config->device_indices);
    return std::make_unique<Whisper>(
        std::make_unique<ctranslate2::models::Whisper>(
            model_loader,
            *config->replica_pool_config
        )
    );
}

inline std::unique_ptr<Whisper> whisper_from_memory(
    ModelMemoryReader& model_reader,
    std::unique_ptr<Config> config
) {
    ctranslate2::models::ModelLoader model_loader = ctranslate2::models::ModelLoader(model_reader.get_impl());
    model_loader.device = config->device;
    model_loader.compute_type = config->compute_type;
    model_loader.tensor_parallel = config->tensor_parallel;
    group_replicas(model_loader, config->device_indices);

    return std::make_unique<Whisper>(
        std::make_unique<ctranslate2::models::Whisper>(
            model_loader,
            *config->replica_pool_config
        )
    );
}
