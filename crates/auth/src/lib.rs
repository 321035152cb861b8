//! Password checking.
