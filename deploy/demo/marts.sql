-- OFITEC demo schema: the marts the Metabase cards of configs/metabase.yaml
-- read, with plausible sample data for 2025 (a Chilean construction company:
-- amounts in CLP, IVA 19%). Deterministic (no random()), re-runnable (drops
-- and recreates its own tables), one transaction. Loaded by `pgproxy demo`
-- and by cmd/metabase-provision/internal/metabase's card tests; psql -f works too.
--
--   of_proyectos, of_facturas, of_ordenes_compra   source tables
--   mart_fact_cashflow     one row per cash movement (ingreso > 0, egreso < 0)
--   mart_ar_aging          receivables by aging bucket at every month end
--   mart_ap_aging          payables by aging bucket at every month end
--   mart_fact_wip          earned value per project at every month end
--   mart_kpi_ceo           daily CEO KPIs: cash days, backlog, IVA, supply lead time
--   of_ceo_kpi_daily       daily AR/AP aging series

begin;

drop table if exists of_ceo_kpi_daily, mart_kpi_ceo, mart_fact_wip, mart_ap_aging, mart_ar_aging,
  mart_fact_cashflow, of_ordenes_compra, of_facturas, of_proyectos cascade;

create table of_proyectos (
  id              int primary key,
  codigo          text not null unique,
  nombre          text not null,
  cliente         text not null,
  fecha_inicio    date not null,
  fecha_termino   date not null,
  contrato_clp    numeric(14,0) not null,   -- sale price (neto)
  presupuesto_clp numeric(14,0) not null    -- budgeted cost (BAC)
);

insert into of_proyectos values
  (1, 'OF-2401', 'Edificio Los Aromos',          'Inmobiliaria Andes SpA',   '2024-10-01', '2025-12-31', 4200000000, 3600000000),
  (2, 'OF-2402', 'Bodega Logística Quilicura',   'LogiSur S.A.',             '2025-01-15', '2025-09-30', 1850000000, 1560000000),
  (3, 'OF-2501', 'Colegio San Esteban (obra gruesa)', 'Fundación Educar',    '2025-02-01', '2026-03-31', 2600000000, 2250000000),
  (4, 'OF-2502', 'Planta Tratamiento RIL',       'Agroindustrial del Maule', '2025-03-01', '2025-11-30', 1240000000, 1050000000),
  (5, 'OF-2503', 'Mejoramiento Ruta G-68',       'Dirección de Vialidad',    '2025-04-01', '2026-06-30', 3100000000, 2720000000),
  (6, 'OF-2504', 'Centro Médico Providencia',    'Salud Integral Ltda.',     '2025-06-01', '2026-08-31', 2750000000, 2380000000);

-- Months each project is active in 2025, with its index m (0-based) and length n.
create temporary table meses on commit drop as
select p.id as proyecto_id, mes::date as mes,
       (row_number() over (partition by p.id order by mes) - 1)::int as m,
       (extract(year from age(date_trunc('month', p.fecha_termino), date_trunc('month', p.fecha_inicio))) * 12
        + extract(month from age(date_trunc('month', p.fecha_termino), date_trunc('month', p.fecha_inicio))) + 1)::int as n
from of_proyectos p
cross join generate_series(greatest(date_trunc('month', p.fecha_inicio), '2025-01-01'),
                           least(date_trunc('month', p.fecha_termino), '2025-12-01'), interval '1 month') as mes;

create table of_facturas (
  id                int generated always as identity primary key,
  tipo              text not null check (tipo in ('venta', 'compra')),
  proyecto_id       int not null references of_proyectos,
  contraparte       text not null,
  folio             int not null,
  fecha_emision     date not null,
  fecha_vencimiento date not null,
  fecha_pago        date,                      -- null: not paid by 2025-12-31
  neto              numeric(14,0) not null,
  iva               numeric(14,0) not null,
  total             numeric(14,0) not null
);

-- Sales: one progress invoice (estado de pago) per project and month, due in 30 days,
-- collected 10 to 140 days after issue.
insert into of_facturas (tipo, proyecto_id, contraparte, folio, fecha_emision, fecha_vencimiento, fecha_pago, neto, iva, total)
select 'venta', p.id, p.cliente, 1000 + p.id * 100 + x.m,
       x.emision, x.emision + 30,
       case when x.emision + x.dias_cobro <= date '2025-12-31' then x.emision + x.dias_cobro end,
       x.neto, round(x.neto * 0.19), x.neto + round(x.neto * 0.19)
from meses mm
join of_proyectos p on p.id = mm.proyecto_id
cross join lateral (select mm.m, (mm.mes + interval '24 days')::date as emision,
                           10 + (p.id * 11 + mm.m * 17) % 131 as dias_cobro,
                           round(p.contrato_clp / mm.n * (0.75 + ((p.id * 7 + mm.m * 13) % 50) / 100.0), -3) as neto) x;

-- Purchases: four supplier invoices per project and month, 30-day terms, paid 20 to 109 days after issue.
insert into of_facturas (tipo, proyecto_id, contraparte, folio, fecha_emision, fecha_vencimiento, fecha_pago, neto, iva, total)
select 'compra', mm.proyecto_id, s.proveedor, 50000 + mm.proyecto_id * 1000 + mm.m * 10 + s.k,
       x.emision, x.emision + 30,
       case when x.emision + x.dias_pago <= date '2025-12-31' then x.emision + x.dias_pago end,
       x.neto, round(x.neto * 0.19), x.neto + round(x.neto * 0.19)
from meses mm
join of_proyectos p on p.id = mm.proyecto_id
cross join (values (1, 'Cementos Bío Bío'), (2, 'Aceros AZA'), (3, 'Sodimac Constructor'), (4, 'Arriendos Maquinaria Sur')) as s(k, proveedor)
cross join lateral (select (mm.mes + (s.k * 6 - 3) * interval '1 day')::date as emision,
                           20 + (mm.proyecto_id * 5 + s.k * 3 + mm.m * 7) % 90 as dias_pago,
                           round(p.presupuesto_clp / mm.n * 0.55 / 4 * (0.7 + ((mm.proyecto_id + s.k * 5 + mm.m * 3) % 60) / 100.0), -3) as neto) x;

-- Purchase orders: ordered to received, for the supply lead time KPI.
create table of_ordenes_compra (
  id              int generated always as identity primary key,
  proyecto_id     int not null references of_proyectos,
  proveedor       text not null,
  fecha_oc        date not null,
  fecha_recepcion date not null
);
insert into of_ordenes_compra (proyecto_id, proveedor, fecha_oc, fecha_recepcion)
select f.proyecto_id, f.contraparte, f.fecha_emision - (4 + (f.folio * 7) % 18), f.fecha_emision - (f.folio % 3)
from of_facturas f where f.tipo = 'compra';

-- Cash movements: collections, supplier payments, payroll, overheads, monthly IVA, opening balance.
create table mart_fact_cashflow (
  fecha       date not null,
  proyecto_id int references of_proyectos,  -- null: company-wide
  categoria   text not null,
  monto       numeric(14,0) not null         -- ingreso > 0, egreso < 0
);
create index on mart_fact_cashflow (fecha);
insert into mart_fact_cashflow values (date '2025-01-01', null, 'Saldo inicial', 950000000);
insert into mart_fact_cashflow
select fecha_pago, proyecto_id, case tipo when 'venta' then 'Cobranza clientes' else 'Pago proveedores' end,
       case tipo when 'venta' then total else -total end
from of_facturas where fecha_pago is not null;
insert into mart_fact_cashflow
select (mm.mes + interval '1 month - 1 day')::date, mm.proyecto_id, 'Remuneraciones',
       -round(p.presupuesto_clp / mm.n * 0.30, -3)
from meses mm join of_proyectos p on p.id = mm.proyecto_id;
insert into mart_fact_cashflow
select mes::date, null, 'Gastos generales', -38000000 - (extract(month from mes)::int % 4) * 2500000
from generate_series(date '2025-01-01', date '2025-12-01', interval '1 month') mes;
insert into mart_fact_cashflow -- IVA of month M is paid on day 20 of M+1 (débito - crédito)
select (date_trunc('month', fecha_emision) + interval '1 month 19 days')::date, null, 'Pago IVA',
       -greatest(sum(case tipo when 'venta' then iva else -iva end), 0)
from of_facturas
where date_trunc('month', fecha_emision) < date '2025-12-01'
group by date_trunc('month', fecha_emision);

-- Aging at every month end: documents issued by the cut and not paid by then,
-- by days past due.
create function pg_temp.tramo(dias int) returns table (tramo text, orden int) language sql immutable as $$
  select case when dias <= 0 then 'Por vencer' when dias <= 30 then '1-30' when dias <= 60 then '31-60'
              when dias <= 90 then '61-90' else '> 90' end,
         case when dias <= 0 then 0 when dias <= 30 then 1 when dias <= 60 then 2 when dias <= 90 then 3 else 4 end
$$;

create table mart_ar_aging (
  fecha_corte date not null,
  tramo       text not null,
  orden       int  not null,   -- 0 Por vencer .. 4 > 90, for sorting
  monto       numeric(14,0) not null,
  documentos  int  not null,
  primary key (fecha_corte, tramo)
);
create table mart_ap_aging (like mart_ar_aging including all);

with cortes as (
  select (mes + interval '1 month - 1 day')::date as fecha_corte
  from generate_series(date '2025-01-01', date '2025-12-01', interval '1 month') mes
), abiertas as (
  select c.fecha_corte, f.tipo, t.tramo, t.orden, f.total
  from cortes c
  join of_facturas f on f.fecha_emision <= c.fecha_corte and (f.fecha_pago is null or f.fecha_pago > c.fecha_corte)
  cross join lateral pg_temp.tramo(c.fecha_corte - f.fecha_vencimiento) t
), tramos as (
  select * from cortes cross join (values ('Por vencer', 0), ('1-30', 1), ('31-60', 2), ('61-90', 3), ('> 90', 4)) v(tramo, orden)
), ar as (
  insert into mart_ar_aging
  select t.fecha_corte, t.tramo, t.orden, coalesce(sum(a.total), 0), count(a.total)
  from tramos t left join abiertas a on a.fecha_corte = t.fecha_corte and a.tramo = t.tramo and a.tipo = 'venta'
  group by 1, 2, 3
)
insert into mart_ap_aging
select t.fecha_corte, t.tramo, t.orden, coalesce(sum(a.total), 0), count(a.total)
from tramos t left join abiertas a on a.fecha_corte = t.fecha_corte and a.tramo = t.tramo and a.tipo = 'compra'
group by 1, 2, 3;

-- Earned value per project at every month end (BAC = presupuesto).
create table mart_fact_wip (
  fecha_corte date not null,
  proyecto_id int  not null references of_proyectos,
  proyecto    text not null,
  bac         numeric(14,0) not null,  -- budget at completion
  pv          numeric(14,0) not null,  -- planned value
  ev          numeric(14,0) not null,  -- earned value
  ac          numeric(14,0) not null,  -- actual cost
  avance_pct  numeric(5,1)  not null,
  cpi         numeric(6,3)  not null,
  spi         numeric(6,3)  not null,
  primary key (fecha_corte, proyecto_id)
);
with base as (
  select (mm.mes + interval '1 month - 1 day')::date as fecha_corte, p.id, p.codigo || ' ' || p.nombre as proyecto,
         p.presupuesto_clp as bac,
         -- planned: linear over the whole contract period
         least(1.0, greatest(0.0, ((mm.mes + interval '1 month - 1 day')::date - p.fecha_inicio + 1)::numeric
                                  / (p.fecha_termino - p.fecha_inicio + 1))) as plan_pct,
         -- execution runs 4% behind to 6% ahead depending on the project, and drifts
         (-0.04 + (p.id * 3 % 10) / 100.0 - (mm.m % 3) / 100.0) as desvio,
         (0.94 + (p.id * 7 % 13) / 100.0) as eficiencia
  from meses mm join of_proyectos p on p.id = mm.proyecto_id
)
insert into mart_fact_wip
select fecha_corte, id, proyecto, bac,
       round(bac * plan_pct), round(bac * ev_pct), round(bac * ev_pct / eficiencia),
       round(ev_pct * 100, 1),
       round(eficiencia, 3), round(ev_pct / nullif(plan_pct, 0), 3)
from (select *, least(1.0, greatest(0.01, plan_pct + desvio * plan_pct)) as ev_pct from base) b;

-- Daily CEO KPIs.
create table mart_kpi_ceo (
  fecha                        date primary key,
  saldo_caja_clp               numeric(14,0) not null,
  dias_caja                    numeric(6,1)  not null,  -- cash / average daily outflow of the last 90 days (fewer in January)
  backlog_clp                  numeric(14,0) not null,  -- contracted and not yet invoiced
  iva_por_pagar_clp            numeric(14,0) not null,  -- month-to-date débito - crédito, due on day 20 of next month
  iva_diferido_clp             numeric(14,0) not null,  -- IVA of sales invoiced and not yet collected
  lead_time_abastecimiento_dias numeric(5,1) not null   -- purchase order to receipt, last 30 days
);
with dias as (
  select d::date as fecha from generate_series(date '2025-01-01', date '2025-12-31', interval '1 day') d
), caja as (
  select d.fecha,
         sum(coalesce(sum(c.monto), 0)) over (order by d.fecha) as saldo,
         sum(coalesce(sum(-c.monto) filter (where c.monto < 0 and c.categoria <> 'Saldo inicial'), 0))
           over w90 / count(*) over w90 as egreso_diario
  from dias d left join mart_fact_cashflow c on c.fecha = d.fecha
  group by d.fecha
  window w90 as (order by d.fecha rows between 89 preceding and current row)
)
insert into mart_kpi_ceo
select c.fecha, c.saldo, round(c.saldo / nullif(c.egreso_diario, 0), 1),
       (select sum(p.contrato_clp) from of_proyectos p)
         - (select coalesce(sum(f.neto), 0) from of_facturas f where f.tipo = 'venta' and f.fecha_emision <= c.fecha)
         - 2150000000,  -- OF-2401 invoiced before 2025
       (select coalesce(sum(case f.tipo when 'venta' then f.iva else -f.iva end), 0) from of_facturas f
         where f.fecha_emision between date_trunc('month', c.fecha)::date and c.fecha),
       (select coalesce(sum(f.iva), 0) from of_facturas f
         where f.tipo = 'venta' and f.fecha_emision <= c.fecha and (f.fecha_pago is null or f.fecha_pago > c.fecha)),
       coalesce((select round(avg(o.fecha_recepcion - o.fecha_oc), 1) from of_ordenes_compra o
                  where o.fecha_recepcion between c.fecha - 29 and c.fecha), 0)
from caja c;

-- Daily aging series: weighted average age of open documents and overdue amounts.
create table of_ceo_kpi_daily (
  fecha             date primary key,
  ar_dias_promedio  numeric(6,1)  not null,  -- days since issue of open receivables, weighted by amount
  ap_dias_promedio  numeric(6,1)  not null,
  ar_vencido_clp    numeric(14,0) not null,  -- receivables past due
  ap_vencido_clp    numeric(14,0) not null,
  ar_abierto_clp    numeric(14,0) not null,
  ap_abierto_clp    numeric(14,0) not null
);
insert into of_ceo_kpi_daily
select d.fecha,
       coalesce(round(sum((d.fecha - f.fecha_emision) * f.total) filter (where f.tipo = 'venta')
                      / nullif(sum(f.total) filter (where f.tipo = 'venta'), 0), 1), 0),
       coalesce(round(sum((d.fecha - f.fecha_emision) * f.total) filter (where f.tipo = 'compra')
                      / nullif(sum(f.total) filter (where f.tipo = 'compra'), 0), 1), 0),
       coalesce(sum(f.total) filter (where f.tipo = 'venta' and f.fecha_vencimiento < d.fecha), 0),
       coalesce(sum(f.total) filter (where f.tipo = 'compra' and f.fecha_vencimiento < d.fecha), 0),
       coalesce(sum(f.total) filter (where f.tipo = 'venta'), 0),
       coalesce(sum(f.total) filter (where f.tipo = 'compra'), 0)
from (select g::date as fecha from generate_series(date '2025-01-01', date '2025-12-31', interval '1 day') g) d
left join of_facturas f on f.fecha_emision <= d.fecha and (f.fecha_pago is null or f.fecha_pago > d.fecha)
group by d.fecha;

analyze;
commit;
