//! Array functions (<https://docs.jsonata.org/array-functions>).

use rand::seq::SliceRandom as _;

use super::{arg, opt_func};
use crate::error::{Error, Result};
use crate::eval::Evaluator;
use crate::value::{deep_equal, truthy, Val};

pub(super) fn count(_: &mut Evaluator<'_>, args: Vec<Val>, _: usize) -> Result<Val> {
    Ok(Val::Num(arg(&args, 0).items().len() as f64))
}

pub(super) fn append(_: &mut Evaluator<'_>, args: Vec<Val>, _: usize) -> Result<Val> {
    let (a, b) = (arg(&args, 0), arg(&args, 1));
    Ok(match (a, b) {
        (Val::Undefined, b) => b,
        (a, Val::Undefined) => a,
        (a, b) => {
            let mut items = a.items();
            items.extend(b.items());
            Val::arr(items)
        }
    })
}

fn merge_sort(
    ev: &mut Evaluator<'_>,
    items: Vec<Val>,
    swap: &mut dyn FnMut(&mut Evaluator<'_>, &Val, &Val) -> Result<bool>,
) -> Result<Vec<Val>> {
    if items.len() <= 1 {
        return Ok(items);
    }
    let mut left = items;
    let right = left.split_off(left.len() / 2);
    let left = merge_sort(ev, left, swap)?;
    let right = merge_sort(ev, right, swap)?;
    let mut out = Vec::with_capacity(left.len() + right.len());
    let (mut i, mut j) = (0, 0);
    while i < left.len() && j < right.len() {
        if swap(ev, &left[i], &right[j])? {
            out.push(right[j].clone());
            j += 1;
        } else {
            out.push(left[i].clone());
            i += 1;
        }
    }
    out.extend_from_slice(&left[i..]);
    out.extend_from_slice(&right[j..]);
    Ok(out)
}

pub(super) fn sort(ev: &mut Evaluator<'_>, args: Vec<Val>, pos: usize) -> Result<Val> {
    let v = arg(&args, 0);
    if v.is_undef() {
        return Ok(Val::Undefined);
    }
    let items = v.items();
    if items.len() <= 1 {
        return Ok(Val::arr(items));
    }
    let f = opt_func(&args, 1, "sort", pos)?;
    let sorted = match f {
        Some(f) => merge_sort(ev, items, &mut |ev, a, b| {
            let r = ev.apply(&f, vec![a.clone(), b.clone()], &Val::Undefined, pos)?;
            Ok(truthy(&r))
        })?,
        None => {
            let all_num = items.iter().all(|v| matches!(v, Val::Num(_)));
            let all_str = items.iter().all(|v| matches!(v, Val::Str(_)));
            if !all_num && !all_str {
                return Err(Error::at(
                    "D3070",
                    pos,
                    "The single argument form of the sort function can only be applied to an array of strings or an array of numbers.  Use the second argument to specify a comparison function",
                ));
            }
            merge_sort(ev, items, &mut |ev, a, b| {
                ev.tick(1, pos)?;
                Ok(match (a, b) {
                    (Val::Num(x), Val::Num(y)) => x > y,
                    (Val::Str(x), Val::Str(y)) => x > y,
                    _ => false,
                })
            })?
        }
    };
    Ok(Val::arr(sorted))
}

pub(super) fn reverse(_: &mut Evaluator<'_>, args: Vec<Val>, _: usize) -> Result<Val> {
    let v = arg(&args, 0);
    if v.is_undef() {
        return Ok(Val::Undefined);
    }
    let mut items = v.items();
    items.reverse();
    Ok(Val::arr(items))
}

pub(super) fn shuffle(_: &mut Evaluator<'_>, args: Vec<Val>, _: usize) -> Result<Val> {
    let v = arg(&args, 0);
    if v.is_undef() {
        return Ok(Val::Undefined);
    }
    let mut items = v.items();
    items.shuffle(&mut rand::rng());
    Ok(Val::arr(items))
}

pub(super) fn distinct(ev: &mut Evaluator<'_>, args: Vec<Val>, pos: usize) -> Result<Val> {
    let v = arg(&args, 0);
    let Val::Arr(items, _) = &v else { return Ok(v) };
    let mut out: Vec<Val> = Vec::new();
    for item in items.iter() {
        ev.tick(out.len() as u64 / 16 + 1, pos)?;
        if !out.iter().any(|o| deep_equal(o, item)) {
            out.push(item.clone());
        }
    }
    Ok(Val::arr(out))
}

pub(super) fn zip(_: &mut Evaluator<'_>, args: Vec<Val>, _: usize) -> Result<Val> {
    let lists: Vec<Vec<Val>> = args.iter().map(|a| a.items()).collect();
    let n = lists.iter().map(Vec::len).min().unwrap_or(0);
    Ok(Val::arr(
        (0..n)
            .map(|i| Val::arr(lists.iter().map(|l| l[i].clone()).collect()))
            .collect(),
    ))
}
