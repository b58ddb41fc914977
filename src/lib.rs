//! Batch Normalization (Ioffe & Szegedy, 2015): an exact, fast transform, the small
//! training stack around it, and a lab that measures the claims made about it.

#![warn(missing_docs)]

pub mod bench;
pub mod bn;
pub mod data;
pub mod lab;
mod memory;
pub mod nn;
pub mod train;
