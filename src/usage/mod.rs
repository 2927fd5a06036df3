//! Token-usage accounting: what the provider reports it billed, read from
//! responses as they stream past, charged to a tenant and a model.
//!
//! - [`json`]: `usage` of a non-streamed JSON answer (chat, completions,
//!   embeddings, the Responses API).
//! - [`sse`]: an incremental parser over a streamed (SSE) answer, bounded in
//!   memory, that can also remove the usage-only event weir asked for.

pub mod account;
pub mod decode;
pub mod inject;
pub mod json;
pub mod log;
pub mod sse;
pub mod tenant;

/// Tokens one answer reported. Absent counts are zero.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Usage {
    pub prompt: u64,
    pub completion: u64,
    /// Prompt tokens served from the provider's cache (part of `prompt`).
    pub cached: u64,
    /// Completion tokens spent on reasoning (part of `completion`).
    pub reasoning: u64,
}

impl Usage {
    /// Every token billed: prompt plus completion.
    pub fn total(&self) -> u64 {
        self.prompt + self.completion
    }
}
