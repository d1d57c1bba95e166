-- OFITEC demo ETL, tagged for lineage: raw → stage → vault → marts.
--
-- Every statement that moves data carries a sqlcommenter tag
-- (/*job='...'*/); pgproxy publishes one OpenLineage run (START, then
-- COMPLETE or FAIL) per tagged statement, with the tables it read (inputs)
-- and wrote (outputs). Untagged statements (the DDL below) produce nothing.
-- Runs on the `ofitec` database after marts.sql; re-runnable (it drops and
-- recreates its own schemas and view, never touches marts.sql's tables).
--
-- Send the statements one by one (sqlscan.Split, or psql -f) to get one run
-- per statement. Sent as a single multi-statement Query message, the file is
-- one run, named by its first tag (ofitec_demo_etl, just below), with the
-- union of the datasets of all statements.

/*job='ofitec_demo_etl',job_namespace='ofitec'*/
drop materialized view if exists mart_cartera_proyecto;
drop schema if exists raw, stage, vault cascade;
create schema raw;
create schema stage;
create schema vault;

-- raw: land the operational tables as they are.
/*job='raw_proyectos',job_namespace='ofitec'*/
create table raw.proyectos as select * from public.of_proyectos;

/*job='raw_facturas',job_namespace='ofitec'*/
create table raw.facturas as select * from public.of_facturas;

-- stage: clean types and names.
create table stage.proyecto (
  codigo       text primary key,
  nombre       text not null,
  cliente      text not null,
  contrato_clp numeric(14,0) not null
);
create table stage.factura (
  tipo             text not null,
  proyecto_codigo  text not null,
  folio            int  not null,
  fecha_emision    date not null,
  fecha_pago       date,
  total            numeric(14,0) not null
);

/*job='raw_to_stage_proyecto',job_namespace='ofitec'*/
insert into stage.proyecto (codigo, nombre, cliente, contrato_clp)
select upper(trim(codigo)), trim(nombre), trim(cliente), contrato_clp
from raw.proyectos;

/*job='raw_to_stage_factura',job_namespace='ofitec'*/
insert into stage.factura (tipo, proyecto_codigo, folio, fecha_emision, fecha_pago, total)
select f.tipo, upper(trim(p.codigo)), f.folio, f.fecha_emision, f.fecha_pago, f.total
from raw.facturas f
join raw.proyectos p on p.id = f.proyecto_id;

-- vault: hubs keyed by business key, satellites with the descriptive data.
create table vault.hub_proyecto (
  hk_proyecto text primary key,   -- md5 of the business key
  codigo      text not null unique,
  load_ts     timestamptz not null,
  record_src  text not null
);
create table vault.sat_factura (
  hk_proyecto   text not null references vault.hub_proyecto,
  tipo          text not null,
  folio         int  not null,
  fecha_emision date not null,
  fecha_pago    date,
  total         numeric(14,0) not null,
  load_ts       timestamptz not null,
  primary key (hk_proyecto, tipo, folio)
);

/*job='stage_to_vault_hub_proyecto',job_namespace='ofitec'*/
insert into vault.hub_proyecto (hk_proyecto, codigo, load_ts, record_src)
select md5(s.codigo), s.codigo, now(), 'odoo'
from stage.proyecto s
where not exists (select 1 from vault.hub_proyecto h where h.codigo = s.codigo);

/*job='stage_to_vault_sat_factura',job_namespace='ofitec'*/
with nuevas as (
  select md5(f.proyecto_codigo) as hk_proyecto, f.tipo, f.folio, f.fecha_emision, f.fecha_pago, f.total
  from stage.factura f
)
insert into vault.sat_factura (hk_proyecto, tipo, folio, fecha_emision, fecha_pago, total, load_ts)
select hk_proyecto, tipo, folio, fecha_emision, fecha_pago, total, now()
from nuevas
on conflict (hk_proyecto, tipo, folio) do update
  set fecha_pago = excluded.fecha_pago, total = excluded.total, load_ts = excluded.load_ts;

-- marts: a materialized view for finance, then its refresh.
/*job='vault_to_mart_cartera_proyecto',job_namespace='ofitec'*/
create materialized view mart_cartera_proyecto as
select h.codigo as proyecto,
       sum(s.total) filter (where s.tipo = 'venta')                             as facturado_clp,
       sum(s.total) filter (where s.tipo = 'venta' and s.fecha_pago is not null) as cobrado_clp,
       sum(s.total) filter (where s.tipo = 'venta' and s.fecha_pago is null)     as por_cobrar_clp
from vault.hub_proyecto h
join vault.sat_factura s using (hk_proyecto)
group by h.codigo;

/*job='refresh_mart_cartera_proyecto',job_namespace='ofitec'*/
refresh materialized view mart_cartera_proyecto;

-- A tagged read: the CEO dashboard's check of cash against receivables.
/*job='check_kpi_ceo_vs_cartera',job_namespace='ofitec'*/
select k.fecha, k.saldo_caja_clp, sum(c.por_cobrar_clp) as por_cobrar_clp
from mart_kpi_ceo k
cross join mart_cartera_proyecto c
where k.fecha = (select max(fecha) from mart_kpi_ceo)
group by k.fecha, k.saldo_caja_clp;
