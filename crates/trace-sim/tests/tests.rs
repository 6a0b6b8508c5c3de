//! trace-sim: the HTTP protocol as clients see it, and the profiles' calibration.

mod calibration;
mod protocol;
