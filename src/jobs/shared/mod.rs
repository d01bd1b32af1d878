//! Code two or more jobs share, each in a module of its own: the KERIS
//! dashboard sender (LMS-01-008, DC-01-004), the xAPI statement sender
//! (DC-01-001, DC-01-002, LRS-01-002) and the give-up policy both use; the
//! configured partners and their clients; reading and writing
//! `keris_batch_data` and `tb_dc_error_data_info`; the guard against a
//! source that shrank (LCMS-01-001, LMS-01-003, LMS-01-010); who may not be
//! kept or sent (LMS-01-007, DC-01-003 and the KERIS senders); sessions
//! clipped to a business day (LMS-01-002/006, BO-01-003).

pub mod dashboard;
pub mod error_data;
pub mod give_up;
pub mod keris_batch_data;
pub mod partners;
pub mod privacy;
pub mod refusal;
pub mod sessions;
pub mod shrink;
pub mod transfer;
