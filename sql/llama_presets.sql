-- presets.sql — llama-quantize's per-tensor type choice (no imatrix, no --pure,
-- no --tensor-type / --output-tensor-type / --token-embedding-type overrides)
-- as Apache DataFusion 55 SQL.
--
-- Source of the rules: llama.cpp src/llama-quant.cpp as vendored in PyPI
-- llama-cpp-python==0.3.36 (llama.cpp 0c1e57098) and xllamacpp==2026.10.11549 —
-- the file is byte-identical in both. See PRESETS.md for line citations.
--
-- INPUT
--   tensors(layer_name VARCHAR, shape LIST<BIGINT>)
--       one row per GGUF tensor; shape outermost first, as in every arrowquant weight table
--       (and as read_gguf gives it; GGUF stores the dims reversed), so shape[-1] is ggml's
--       ne[0], the row length (= PyTorch weight.shape[-1] = in_features). token_embd.weight
--       of a vocab-V, width-E model is [V, E]; ffn_down.weight is [n_embd, n_ff].
--   params(n_layers BIGINT, n_head BIGINT, n_head_kv BIGINT, n_expert BIGINT, arch VARCHAR)
--       one row, from the GGUF kvs  {arch}.block_count, {arch}.attention.head_count,
--       {arch}.attention.head_count_kv, {arch}.expert_count (0 when absent),
--       general.architecture.
--
-- OUTPUT  one row per tensor with one column per preset holding the scheme:
--   'q4_0' 'q5_0' 'q5_1' 'q8_0' 'q4_k' 'q5_k' 'q6_k'  quantize to that ggml type
--   'f16'   ggml's last-resort fallback (row length not a multiple of 32)
--   'f32'   NOT quantized: copied unchanged (it is F32 in every converter-made
--           GGUF: norms, rope_freqs, 1-D tensors).  If your source tensor is
--           F16/BF16, "keep as is" means that dtype, not f32.
--   NOTE 'q5_0' / 'q5_1' appear only as fallbacks (Q4_K -> Q5_0, Q5_K -> Q5_1)
--   when a row length is not a multiple of 256.
--
-- Integer division: DataFusion's BIGINT / BIGINT truncates (like C++).  DuckDB's
-- '/' returns DOUBLE — use '//' there.

WITH
base AS (
  SELECT
    t.layer_name,
    t.shape,
    p.n_layers, p.n_head, p.n_head_kv, p.n_expert, p.arch,
    t.shape[-1] AS ne0,                                        -- row length
    -- sscanf(name, "blk.%d.")  (NULL for non-block tensors)
    CAST(regexp_match(t.layer_name, '^blk\.([0-9]+)\.')[1] AS BIGINT) AS layer_index,
    -- ggml_n_dims(t) >= 2 : some dim after the first is > 1
    (COALESCE(t.shape[-2], 1) > 1 OR COALESCE(t.shape[-3], 1) > 1
                                  OR COALESCE(t.shape[-4], 1) > 1) AS is_2d_or_more
  FROM tensors t CROSS JOIN params p
),
cat AS (
  SELECT *,
    -- tensor_get_category(): first match wins, in this order (llama-quant.cpp:119-154)
    CASE
      WHEN layer_name = 'output.weight'                                   THEN 'output'
      WHEN layer_name IN ('token_embd.weight', 'per_layer_token_embd.weight') THEN 'token_embd'
      WHEN strpos(layer_name, 'attn_qkv.weight')  > 0                    THEN 'attn_v'   -- fused QKV counts as attn_v
      WHEN strpos(layer_name, 'attn_kv_b.weight') > 0                    THEN 'attn_v'   -- (DeepSeek MLA) ditto
      WHEN strpos(layer_name, 'attn_v.weight')    > 0                    THEN 'attn_v'
      WHEN strpos(layer_name, 'attn_k.weight')    > 0                    THEN 'attn_k'
      WHEN strpos(layer_name, 'attn_q.weight')    > 0                    THEN 'attn_q'
      WHEN strpos(layer_name, 'attn_output.weight') > 0                  THEN 'attn_output'
      WHEN strpos(layer_name, 'ffn_up')   > 0                            THEN 'ffn_up'
      WHEN strpos(layer_name, 'ffn_gate') > 0                            THEN 'ffn_gate'
      WHEN strpos(layer_name, 'ffn_down') > 0                            THEN 'ffn_down'
      ELSE 'other'
    END AS category,
    -- tensor_allows_quantization() (llama-quant.cpp:287-383), the parts that can
    -- hit a LLaMA-family model; the many arch-specific exclusions (RWKV, SAM,
    -- altup, ssm_conv1d, ...) are omitted — see PRESETS.md.
    (    is_2d_or_more
     AND ends_with(layer_name, 'weight')
     AND strpos(layer_name, '_norm.weight')        = 0
     AND strpos(layer_name, 'ffn_gate_inp.weight') = 0      -- MoE router
     AND layer_name NOT IN ('position_embd.weight', 'token_types.weight')
    ) AS quantizable,
    -- 70B bump (llama-quant.cpp:593-598): LLM_TYPE_70B for arch llama is 80 layers with GQA
    (arch = 'llama' AND n_layers = 80 AND n_head <> n_head_kv AND COALESCE(n_expert, 0) <> 8) AS is_70b,
    -- llama_model_quantize visits tensors in weights_map order: std::map keyed by
    -- (layer from "blk.%d." or -1, then name) — llama-model-loader.h:54-65
    COALESCE(CAST(regexp_match(layer_name, '^blk\.([0-9]+)\.')[1] AS BIGINT), -1) AS visit_layer
  FROM base
),
ctr AS (
  SELECT *,
    -- has_tied_embeddings = no 'output.weight' tensor in the file
    MAX(CASE WHEN category = 'output' THEN 1 ELSE 0 END) OVER () = 1 AS has_output_weight,
    -- n_attention_wv: number of attn_v-category tensors (counted over ALL tensors)
    SUM(CASE WHEN category = 'attn_v' THEN 1 ELSE 0 END) OVER () AS n_attention_wv,
    -- i_attention_wv / i_ffn_down: how many earlier QUANTIZABLE tensors (visit
    -- order) share the category.  = layer_index for a plain llama.
    ROW_NUMBER() OVER (PARTITION BY category, quantizable
                       ORDER BY visit_layer, layer_name) - 1 AS i_in_category
  FROM cat
),
h AS (
  SELECT *,
    CASE WHEN category = 'attn_v'   THEN i_in_category END AS i_attention_wv,
    -- ffn_down layer: the counter for dense models, the name's blk.N for MoE (n_expert > 1)
    CASE WHEN category = 'ffn_down' THEN
         CASE WHEN COALESCE(n_expert, 0) > 1 THEN layer_index ELSE i_in_category END
    END AS i_ffn_down
  FROM ctr
),
mb AS (
  SELECT *,
    -- use_more_bits(i, n) = i < n/8 || i >= 7*n/8 || (i - n/8) % 3 == 2   (llama-quant.cpp:452-454)
    (   i_attention_wv <     n_attention_wv / 8
     OR i_attention_wv >= 7 * n_attention_wv / 8
     OR (i_attention_wv - n_attention_wv / 8) % 3 = 2) AS attn_v_more_bits,
    -- ffn_down uses n = n_layers (hparams.n_layer_all), NOT the number of ffn_down tensors
    (   i_ffn_down <     n_layers / 8
     OR i_ffn_down >= 7 * n_layers / 8
     OR (i_ffn_down - n_layers / 8) % 3 = 2) AS ffn_down_more_bits
  FROM h
)
SELECT
  layer_name,
  shape,

  -- ===== preset: Q8_0  (general.file_type = 7) ==============================
  CASE
    WHEN NOT quantizable THEN 'f32'
    WHEN ne0 % 32 <> 0   THEN 'f16'       -- q8_0 needs ne0 % 32 == 0
    ELSE 'q8_0'                           -- everything, incl. output/token_embd and
  END AS q8_0,                            -- (n_expert == 8) attn_v / attn_k

  -- ===== preset: Q4_0  (general.file_type = 2) ==============================
  CASE
    WHEN NOT quantizable THEN 'f32'
    WHEN category = 'output' OR (category = 'token_embd' AND NOT has_output_weight)
         THEN CASE WHEN ne0 % 256 = 0 THEN 'q6_k' WHEN ne0 % 32 = 0 THEN 'q8_0' ELSE 'f16' END
    WHEN COALESCE(n_expert, 0) = 8 AND category IN ('attn_v', 'attn_k')
         THEN CASE WHEN ne0 % 32 = 0 THEN 'q8_0' ELSE 'f16' END
    WHEN ne0 % 32 <> 0   THEN 'f16'
    ELSE 'q4_0'
  END AS q4_0,

  -- ===== preset: Q6_K  (general.file_type = 18) =============================
  CASE
    WHEN NOT quantizable THEN 'f32'
    WHEN COALESCE(n_expert, 0) = 8 AND category IN ('attn_v', 'attn_k')
         THEN CASE WHEN ne0 % 32 = 0 THEN 'q8_0' ELSE 'f16' END
    ELSE CASE WHEN ne0 % 256 = 0 THEN 'q6_k' WHEN ne0 % 32 = 0 THEN 'q8_0' ELSE 'f16' END
  END AS q6_k,

  -- ===== preset: Q4_K_M  (general.file_type = 15) ===========================
  CASE
    WHEN NOT quantizable THEN 'f32'
    WHEN category = 'output' OR (category = 'token_embd' AND NOT has_output_weight)
         THEN CASE WHEN ne0 % 256 = 0 THEN 'q6_k' WHEN ne0 % 32 = 0 THEN 'q8_0' ELSE 'f16' END
    WHEN COALESCE(n_expert, 0) = 8 AND category IN ('attn_v', 'attn_k')
         THEN CASE WHEN ne0 % 32 = 0 THEN 'q8_0' ELSE 'f16' END
    WHEN COALESCE(n_expert, 0) = 8 AND category = 'attn_output'
         THEN CASE WHEN ne0 % 256 = 0 THEN 'q5_k' WHEN ne0 % 32 = 0 THEN 'q5_1' ELSE 'f16' END
    WHEN (category = 'attn_v' AND attn_v_more_bits) OR (category = 'ffn_down' AND ffn_down_more_bits)
         THEN CASE WHEN ne0 % 256 = 0 THEN 'q6_k' WHEN ne0 % 32 = 0 THEN 'q8_0' ELSE 'f16' END
    WHEN category = 'attn_v' AND is_70b
         THEN CASE WHEN ne0 % 256 = 0 THEN 'q5_k' WHEN ne0 % 32 = 0 THEN 'q5_1' ELSE 'f16' END
    ELSE      CASE WHEN ne0 % 256 = 0 THEN 'q4_k' WHEN ne0 % 32 = 0 THEN 'q5_0' ELSE 'f16' END
  END AS q4_k_m,

  -- ===== preset: Q4_K_S  (general.file_type = 14) ===========================
  CASE
    WHEN NOT quantizable THEN 'f32'
    WHEN category = 'output' OR (category = 'token_embd' AND NOT has_output_weight)
         THEN CASE WHEN ne0 % 256 = 0 THEN 'q6_k' WHEN ne0 % 32 = 0 THEN 'q8_0' ELSE 'f16' END
    WHEN COALESCE(n_expert, 0) = 8 AND category IN ('attn_v', 'attn_k')
         THEN CASE WHEN ne0 % 32 = 0 THEN 'q8_0' ELSE 'f16' END
    WHEN COALESCE(n_expert, 0) = 8 AND category = 'attn_output'
         THEN CASE WHEN ne0 % 256 = 0 THEN 'q5_k' WHEN ne0 % 32 = 0 THEN 'q5_1' ELSE 'f16' END
    WHEN (category = 'attn_v' AND (i_attention_wv < 4 OR is_70b))
      OR (category = 'ffn_down' AND i_ffn_down < n_layers / 8)
         THEN CASE WHEN ne0 % 256 = 0 THEN 'q5_k' WHEN ne0 % 32 = 0 THEN 'q5_1' ELSE 'f16' END
    ELSE      CASE WHEN ne0 % 256 = 0 THEN 'q4_k' WHEN ne0 % 32 = 0 THEN 'q5_0' ELSE 'f16' END
  END AS q4_k_s,

  -- ===== preset: Q5_K_M  (general.file_type = 17) ===========================
  CASE
    WHEN NOT quantizable THEN 'f32'
    WHEN category = 'output' OR (category = 'token_embd' AND NOT has_output_weight)
         THEN CASE WHEN ne0 % 256 = 0 THEN 'q6_k' WHEN ne0 % 32 = 0 THEN 'q8_0' ELSE 'f16' END
    WHEN COALESCE(n_expert, 0) = 8 AND category IN ('attn_v', 'attn_k')
         THEN CASE WHEN ne0 % 32 = 0 THEN 'q8_0' ELSE 'f16' END
    WHEN (category = 'attn_v' AND attn_v_more_bits) OR (category = 'ffn_down' AND ffn_down_more_bits)
         THEN CASE WHEN ne0 % 256 = 0 THEN 'q6_k' WHEN ne0 % 32 = 0 THEN 'q8_0' ELSE 'f16' END
    ELSE      CASE WHEN ne0 % 256 = 0 THEN 'q5_k' WHEN ne0 % 32 = 0 THEN 'q5_1' ELSE 'f16' END
  END AS q5_k_m

FROM mb
-- llama-quantize writes tensors in this order (weights_map order)
ORDER BY visit_layer, layer_name
