//! placeholder: written in lane apt
