//! placeholder: see helper branch
