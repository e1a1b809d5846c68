//! `csrd bench`: measurements users can repeat on their own machines.

pub mod keygen;
pub mod list;
pub mod load;
pub mod verify;
