//! Classification heads on CLIP embeddings (written below).
