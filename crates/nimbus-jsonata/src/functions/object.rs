//! Object functions (<https://docs.jsonata.org/object-functions>) and Boolean functions
//! (<https://docs.jsonata.org/boolean-functions>).

use std::rc::Rc;

use indexmap::IndexMap;

use super::{arg, bad_arg, opt_str};
use crate::error::{Error, Result};
use crate::eval::Evaluator;
use crate::value::{truthy, Val};

pub(super) fn boolean(_: &mut Evaluator<'_>, args: Vec<Val>, _: usize) -> Result<Val> {
    let v = arg(&args, 0);
    Ok(if v.is_undef() {
        Val::Undefined
    } else {
        Val::Bool(truthy(&v))
    })
}

pub(super) fn not(_: &mut Evaluator<'_>, args: Vec<Val>, _: usize) -> Result<Val> {
    let v = arg(&args, 0);
    Ok(if v.is_undef() {
        Val::Undefined
    } else {
        Val::Bool(!truthy(&v))
    })
}

pub(super) fn exists(_: &mut Evaluator<'_>, args: Vec<Val>, _: usize) -> Result<Val> {
    Ok(Val::Bool(!arg(&args, 0).is_undef()))
}

pub(super) fn keys(_: &mut Evaluator<'_>, args: Vec<Val>, _: usize) -> Result<Val> {
    let mut out: Vec<String> = Vec::new();
    for item in arg(&args, 0).items() {
        if let Val::Obj(o) = item {
            for k in o.keys() {
                if !out.contains(k) {
                    out.push(k.clone());
                }
            }
        }
    }
    Ok(Val::seq(out.into_iter().map(Val::str).collect()))
}

pub(super) fn lookup(_: &mut Evaluator<'_>, args: Vec<Val>, pos: usize) -> Result<Val> {
    let key = opt_str(&args, 1, "lookup", pos)?.ok_or_else(|| bad_arg("lookup", 1, pos))?;
    let mut out = Vec::new();
    let v = arg(&args, 0);
    let items = match &v {
        Val::Arr(..) => v.items(),
        Val::Obj(_) => vec![v.clone()],
        _ => return Ok(Val::Undefined),
    };
    for item in items {
        if let Val::Obj(o) = item {
            match o.get(key.as_ref()) {
                Some(Val::Arr(a, _)) => out.extend(a.iter().cloned()),
                Some(x) => out.push(x.clone()),
                None => {}
            }
        }
    }
    Ok(Val::seq(out))
}

pub(super) fn spread(_: &mut Evaluator<'_>, args: Vec<Val>, _: usize) -> Result<Val> {
    let v = arg(&args, 0);
    let mut out = Vec::new();
    match &v {
        Val::Arr(a, _) => {
            for item in a.iter() {
                spread_into(item, &mut out);
            }
        }
        Val::Obj(_) => spread_into(&v, &mut out),
        _ => return Ok(v),
    }
    Ok(Val::seq(out))
}

fn spread_into(v: &Val, out: &mut Vec<Val>) {
    match v {
        Val::Obj(o) => {
            for (k, x) in o.iter() {
                let mut one = IndexMap::new();
                one.insert(k.clone(), x.clone());
                out.push(Val::Obj(Rc::new(one)));
            }
        }
        v => out.push(v.clone()),
    }
}

pub(super) fn merge(_: &mut Evaluator<'_>, args: Vec<Val>, pos: usize) -> Result<Val> {
    let v = arg(&args, 0);
    if v.is_undef() {
        return Ok(Val::Undefined);
    }
    let mut out = IndexMap::new();
    for item in v.items() {
        match item {
            Val::Obj(o) => {
                for (k, x) in o.iter() {
                    out.insert(k.clone(), x.clone());
                }
            }
            _ => {
                return Err(Error::at(
                    "T0412",
                    pos,
                    "Argument 1 of function $merge must be an array of objects",
                ))
            }
        }
    }
    Ok(Val::Obj(Rc::new(out)))
}

pub(super) fn type_(_: &mut Evaluator<'_>, args: Vec<Val>, _: usize) -> Result<Val> {
    let v = arg(&args, 0);
    Ok(if v.is_undef() {
        Val::Undefined
    } else {
        Val::str(v.type_name())
    })
}

pub(super) fn error(_: &mut Evaluator<'_>, args: Vec<Val>, pos: usize) -> Result<Val> {
    let msg = opt_str(&args, 0, "error", pos)?;
    Err(Error::at(
        "D3137",
        pos,
        msg.map(|m| m.to_string())
            .unwrap_or_else(|| "$error() function evaluated".into()),
    ))
}

pub(super) fn assert(_: &mut Evaluator<'_>, args: Vec<Val>, pos: usize) -> Result<Val> {
    let msg = opt_str(&args, 1, "assert", pos)?;
    match arg(&args, 0) {
        Val::Bool(true) => Ok(Val::Undefined),
        Val::Bool(false) => Err(Error::at(
            "D3141",
            pos,
            msg.map(|m| m.to_string())
                .unwrap_or_else(|| "$assert() statement failed".into()),
        )),
        _ => Err(Error::at(
            "T0410",
            pos,
            "Argument 1 of function $assert does not match function signature",
        )),
    }
}
