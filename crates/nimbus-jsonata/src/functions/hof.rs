//! Higher-order functions (<https://docs.jsonata.org/higher-order-functions>) and
//! `$each`/`$sift` (<https://docs.jsonata.org/object-functions>).

use std::rc::Rc;

use indexmap::IndexMap;

use super::{arg, hof_call, req_func};
use crate::error::{Error, Result};
use crate::eval::Evaluator;
use crate::value::{truthy, Val};

pub(super) fn map(ev: &mut Evaluator<'_>, args: Vec<Val>, pos: usize) -> Result<Val> {
    let v = arg(&args, 0);
    if v.is_undef() {
        return Ok(Val::Undefined);
    }
    let f = req_func(&args, 1, "map", pos)?;
    let items = v.items();
    let whole = Val::arr(items.clone());
    let mut out = Vec::new();
    for (i, item) in items.into_iter().enumerate() {
        let r = hof_call(ev, &f, [item, Val::Num(i as f64), whole.clone()], pos)?;
        if !r.is_undef() {
            out.push(r);
        }
    }
    Ok(Val::seq(out))
}

pub(super) fn filter(ev: &mut Evaluator<'_>, args: Vec<Val>, pos: usize) -> Result<Val> {
    let v = arg(&args, 0);
    if v.is_undef() {
        return Ok(Val::Undefined);
    }
    let f = req_func(&args, 1, "filter", pos)?;
    let items = v.items();
    let whole = Val::arr(items.clone());
    let mut out = Vec::new();
    for (i, item) in items.into_iter().enumerate() {
        let r = hof_call(
            ev,
            &f,
            [item.clone(), Val::Num(i as f64), whole.clone()],
            pos,
        )?;
        if truthy(&r) {
            out.push(item);
        }
    }
    Ok(Val::seq(out))
}

pub(super) fn single(ev: &mut Evaluator<'_>, args: Vec<Val>, pos: usize) -> Result<Val> {
    let v = arg(&args, 0);
    if v.is_undef() {
        return Ok(Val::Undefined);
    }
    let f = match args.get(1) {
        Some(Val::Func(f)) => Some(f.clone()),
        _ => None,
    };
    let items = v.items();
    let whole = Val::arr(items.clone());
    let mut found = None;
    for (i, item) in items.into_iter().enumerate() {
        let ok = match &f {
            Some(f) => truthy(&hof_call(
                ev,
                f,
                [item.clone(), Val::Num(i as f64), whole.clone()],
                pos,
            )?),
            None => true,
        };
        if ok {
            if found.is_some() {
                return Err(Error::at("D3138", pos, "The $single() function expected exactly 1 matching result.  Instead it matched more."));
            }
            found = Some(item);
        }
    }
    found.ok_or_else(|| {
        Error::at(
            "D3139",
            pos,
            "The $single() function expected exactly 1 matching result.  Instead it matched 0.",
        )
    })
}

pub(super) fn reduce(ev: &mut Evaluator<'_>, args: Vec<Val>, pos: usize) -> Result<Val> {
    let v = arg(&args, 0);
    if v.is_undef() {
        return Ok(Val::Undefined);
    }
    let f = req_func(&args, 1, "reduce", pos)?;
    if f.arity() < 2 {
        return Err(Error::at(
            "D3050",
            pos,
            "The second argument of reduce function must be a function with at least two arguments",
        ));
    }
    let items = v.items();
    let whole = Val::arr(items.clone());
    let mut iter = items.into_iter().enumerate();
    let mut acc = match arg(&args, 2) {
        Val::Undefined => match iter.next() {
            Some((_, first)) => first,
            None => return Ok(Val::Undefined),
        },
        init => init,
    };
    for (i, item) in iter {
        let n = f.arity().min(4);
        let full = [acc, item, Val::Num(i as f64), whole.clone()];
        acc = ev.apply(&f, full.into_iter().take(n).collect(), &Val::Undefined, pos)?;
    }
    Ok(acc)
}

pub(super) fn each(ev: &mut Evaluator<'_>, args: Vec<Val>, pos: usize) -> Result<Val> {
    let Val::Obj(o) = arg(&args, 0) else {
        return Ok(Val::Undefined);
    };
    let f = req_func(&args, 1, "each", pos)?;
    let whole = Val::Obj(o.clone());
    let mut out = Vec::new();
    for (k, v) in o.iter() {
        let r = hof_call(
            ev,
            &f,
            [v.clone(), Val::str(k.as_str()), whole.clone()],
            pos,
        )?;
        if !r.is_undef() {
            out.push(r);
        }
    }
    Ok(Val::seq(out))
}

pub(super) fn sift(ev: &mut Evaluator<'_>, args: Vec<Val>, pos: usize) -> Result<Val> {
    let Val::Obj(o) = arg(&args, 0) else {
        return Ok(Val::Undefined);
    };
    let f = req_func(&args, 1, "sift", pos)?;
    let whole = Val::Obj(o.clone());
    let mut out = IndexMap::new();
    for (k, v) in o.iter() {
        if truthy(&hof_call(
            ev,
            &f,
            [v.clone(), Val::str(k.as_str()), whole.clone()],
            pos,
        )?) {
            out.insert(k.clone(), v.clone());
        }
    }
    Ok(if out.is_empty() {
        Val::Undefined
    } else {
        Val::Obj(Rc::new(out))
    })
}
