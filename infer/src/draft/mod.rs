//! Everything that proposes draft tokens from a model (DESIGN §1): the heads, the draft
//! vocabulary's `lm_head` projection, and finding the heads (and their corpus companions) that
//! belong to a base model.

pub mod heads;
pub mod resolve;
pub mod vocab;
